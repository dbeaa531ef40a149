rule evaluate:
    """Test-split metrics of one model x fold from segbench's one confusion-matrix implementation."""
    input:
        weights=f"{RES}/models/{{model}}/fold{{fold}}/model.safetensors",
        info=f"{RES}/models/{{model}}/fold{{fold}}/model.json",
        dataset=f"{DS}/dataset.json",
        splits=f"{RES}/splits.json",
        cfg=f"{CONF}/evaluate.json",
    output:
        metrics=f"{RES}/eval/{{model}}/fold{{fold}}/metrics.json",
        per_image=f"{RES}/eval/{{model}}/fold{{fold}}/per_image.csv",
        confusion=f"{RES}/eval/{{model}}/fold{{fold}}/confusion.npy",
        confusion_per_image=f"{RES}/eval/{{model}}/fold{{fold}}/confusion_per_image.npy",
        predictions=directory(f"{RES}/eval/{{model}}/fold{{fold}}/predictions"),
    params:
        model="{model}",
        fold="{fold}",
        ckpt=lambda wildcards, input: os.path.dirname(input.weights),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        f"{RES}/logs/evaluate/{{model}}_fold{{fold}}.log",
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    shell:
        "segbench evaluate --checkpoint {params.ckpt} --dataset {input.dataset} --splits {input.splits}"
        " --config {input.cfg} --out {params.out} --threads {threads} > {log} 2>&1"
