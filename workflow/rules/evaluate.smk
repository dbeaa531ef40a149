rule evaluate:
    """Validation and test metrics of one model x fold from segbench's one confusion-matrix implementation."""
    wildcard_constraints:
        model=r"(?!ensemble_top\d+$)[A-Za-z0-9_.-]+",
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
        val_per_image=f"{RES}/eval/{{model}}/fold{{fold}}/val_per_image.csv",
        val_confusion=f"{RES}/eval/{{model}}/fold{{fold}}/val_confusion.npy",
        val_confusion_per_image=f"{RES}/eval/{{model}}/fold{{fold}}/val_confusion_per_image.npy",
        timing=f"{RES}/eval/{{model}}/fold{{fold}}/timing.json",
    params:
        model="{model}",
        fold="{fold}",
        code=CODE["evaluate"],
        ckpt=lambda wildcards, input: os.path.dirname(input.weights),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        f"{RES}/logs/evaluate/{{model}}_fold{{fold}}.log",
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    shell:
        "segbench evaluate --checkpoint {params.ckpt} --dataset {input.dataset} --splits {input.splits}"
        " --config {input.cfg} --out {params.out} --threads {threads} > {log} 2>&1"


rule ensemble:
    """Softmax-averaging ensemble of the top-k models (ranked on validation only), evaluated like a model."""
    wildcard_constraints:
        k=r"\d+",
    input:
        val=expand(f"{RES}/eval/{{model}}/fold{{fold}}/val_confusion.npy", model=MODELS, fold=FOLDS),
        weights=expand(f"{RES}/models/{{model}}/fold{{fold}}/model.safetensors", model=MODELS, fold=FOLDS),
        dataset=f"{DS}/dataset.json",
        splits=f"{RES}/splits.json",
        select=f"{CONF}/select.json",
        cfg=f"{CONF}/evaluate.json",
    output:
        metrics=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/metrics.json",
        per_image=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/per_image.csv",
        confusion=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/confusion.npy",
        confusion_per_image=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/confusion_per_image.npy",
        predictions=directory(f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/predictions"),
        val_per_image=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/val_per_image.csv",
        val_confusion=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/val_confusion.npy",
        val_confusion_per_image=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/val_confusion_per_image.npy",
        timing=f"{RES}/eval/ensemble_top{{k}}/fold{{fold}}/timing.json",
        spec=f"{RES}/models/ensemble_top{{k}}/fold{{fold}}/ensemble.json",
    params:
        exp=lambda wildcards, input: os.path.dirname(input.splits),
        folds=N_FOLDS,
        models=" ".join(MODELS),
        out=lambda wildcards, output: os.path.dirname(output.metrics),
        code=CODE["ensemble"],
    log:
        f"{RES}/logs/evaluate/ensemble_top{{k}}_fold{{fold}}.log",
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=GPU,
        mem_mb=6000,
        runtime=60,
    shell:
        "segbench ensemble --experiment {params.exp} --dataset {input.dataset} --splits {input.splits}"
        " --select {input.select} --config {input.cfg} --out {params.out} --fold {wildcards.fold}"
        " --folds {params.folds} --models {params.models} --threads {threads} > {log} 2>&1"
