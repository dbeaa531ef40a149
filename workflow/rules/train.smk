rule train:
    """One model on one fold. Sees only its model config, the recipes, the split and the dataset."""
    input:
        dataset=f"{DS}/dataset.json",
        splits=f"{RES}/splits.json",
        model=f"{CONF}/models/{{model}}.json",
        train=f"{CONF}/train.json",
        augment=f"{CONF}/augment.json",
    output:
        weights=f"{RES}/models/{{model}}/fold{{fold}}/model.safetensors",
        info=f"{RES}/models/{{model}}/fold{{fold}}/model.json",
        history=f"{RES}/models/{{model}}/fold{{fold}}/history.csv",
        meta=f"{RES}/models/{{model}}/fold{{fold}}/train_meta.json",
    params:
        model="{model}",
        fold="{fold}",
        out=lambda wildcards, output: os.path.dirname(output.weights),
    log:
        f"{RES}/logs/train/{{model}}_fold{{fold}}.log",
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "segbench train --dataset {input.dataset} --splits {input.splits} --fold {params.fold}"
        " --model {input.model} --train {input.train} --augment {input.augment}"
        " --out {params.out} --threads {threads} 2>&1 | tee {log}"
