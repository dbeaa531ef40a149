rule aggregate:
    """summary.csv/json (one row per model), learning_curves.csv, best/."""
    input:
        metrics=expand(f"{RES}/eval/{{model}}/fold{{fold}}/metrics.json", model=MODELS, fold=FOLDS),
        per_image=expand(f"{RES}/eval/{{model}}/fold{{fold}}/confusion_per_image.npy", model=MODELS, fold=FOLDS),
        meta=expand(f"{RES}/models/{{model}}/fold{{fold}}/train_meta.json", model=MODELS, fold=FOLDS),
        history=expand(f"{RES}/models/{{model}}/fold{{fold}}/history.csv", model=MODELS, fold=FOLDS),
        models=expand(f"{CONF}/models/{{model}}.json", model=MODELS),
        validation=f"{DS}/validation.json",
        splits=f"{RES}/splits.json",
    output:
        summary=f"{RES}/summary.json",
        table=f"{RES}/summary.csv",
        curves=f"{RES}/learning_curves.csv",
        best=f"{RES}/best/selection.json",
    params:
        exp=lambda wildcards, output: os.path.dirname(output.summary),
        ds=lambda wildcards, input: os.path.dirname(input.validation),
        folds=N_FOLDS,
    log:
        f"{RES}/logs/aggregate.log",
    conda:
        SEGBENCH_ENV
    shell:
        "segbench aggregate --experiment {params.exp} --dataset-dir {params.ds} --folds {params.folds}"
        " --model-configs {input.models} 2>&1 | tee {log}"


rule report:
    """report/index.html: self-contained (plots embedded), readable offline."""
    input:
        summary=f"{RES}/summary.json",
        curves=f"{RES}/learning_curves.csv",
        per_image=expand(f"{RES}/eval/{{model}}/fold{{fold}}/per_image.csv", model=MODELS, fold=FOLDS),
        predictions=expand(f"{RES}/eval/{{model}}/fold{{fold}}/predictions", model=MODELS, fold=FOLDS),
        cfg=f"{CONF}/report.json",
        dataset=f"{DS}/dataset.json",
    output:
        REPORT,
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        ds=lambda wildcards, input: os.path.dirname(input.dataset),
    log:
        f"{RES}/logs/report.log",
    conda:
        SEGBENCH_ENV
    shell:
        "segbench report --experiment {params.exp} --dataset-dir {params.ds} --config {input.cfg}"
        " --out {output} > {log} 2>&1"
