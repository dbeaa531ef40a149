rule aggregate:
    """summary.csv/json (one row per model), learning_curves.csv, selection.json (on validation only)."""
    input:
        metrics=expand(f"{RES}/eval/{{model}}/fold{{fold}}/metrics.json", model=CANDIDATES, fold=FOLDS),
        timing=expand(f"{RES}/eval/{{model}}/fold{{fold}}/timing.json", model=CANDIDATES, fold=FOLDS),
        per_image=expand(f"{RES}/eval/{{model}}/fold{{fold}}/confusion_per_image.npy", model=CANDIDATES, fold=FOLDS),
        val=expand(f"{RES}/eval/{{model}}/fold{{fold}}/val_confusion.npy", model=CANDIDATES, fold=FOLDS),
        meta=expand(f"{RES}/models/{{model}}/fold{{fold}}/train_meta.json", model=MODELS, fold=FOLDS),
        history=expand(f"{RES}/models/{{model}}/fold{{fold}}/history.csv", model=MODELS, fold=FOLDS),
        models=expand(f"{CONF}/models/{{model}}.json", model=MODELS),
        validation=f"{DS}/validation.json",
        dataset=f"{DS}/dataset.json",
        splits=f"{RES}/splits.json",
        select=f"{CONF}/select.json",
    output:
        summary=f"{RES}/summary.json",
        table=f"{RES}/summary.csv",
        curves=f"{RES}/learning_curves.csv",
        selection=f"{RES}/selection.json",
        provenance=f"{RES}/provenance.json",
    params:
        exp=lambda wildcards, output: os.path.dirname(output.summary),
        ds=lambda wildcards, input: os.path.dirname(input.validation),
        folds=N_FOLDS,
        ensembles=" ".join(ENSEMBLES),
        code=CODE["aggregate"],
    log:
        f"{RES}/logs/aggregate.log",
    conda:
        SEGBENCH_ENV
    shell:
        "segbench aggregate --experiment {params.exp} --dataset-dir {params.ds} --folds {params.folds}"
        " --model-configs {input.models} --select {input.select} --ensembles {params.ensembles} 2>&1 | tee {log}"


rule best:
    """best/: the selected model ready to use (weights, config, classes, preprocessing, ONNX + parity, model card)."""
    input:
        selection=f"{RES}/selection.json",
        summary=f"{RES}/summary.json",
        weights=expand(f"{RES}/models/{{model}}/fold{{fold}}/model.safetensors", model=MODELS, fold=FOLDS),
        ensembles=expand(f"{RES}/models/{{model}}/fold{{fold}}/ensemble.json", model=ENSEMBLES, fold=FOLDS),
        dataset=f"{DS}/dataset.json",
        select=f"{CONF}/select.json",
        evaluate=f"{CONF}/evaluate.json",
    output:
        card=f"{RES}/best/README.md",
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        ds=lambda wildcards, input: os.path.dirname(input.dataset),
        code=CODE["best"],
    log:
        f"{RES}/logs/best.log",
    conda:
        SEGBENCH_ENV
    shell:
        "segbench best --experiment {params.exp} --dataset-dir {params.ds} --select {input.select}"
        " --evaluate {input.evaluate} 2>&1 | tee {log}"


rule report:
    """report/index.html: self-contained (plots embedded), readable offline."""
    input:
        summary=f"{RES}/summary.json",
        curves=f"{RES}/learning_curves.csv",
        per_image=expand(f"{RES}/eval/{{model}}/fold{{fold}}/per_image.csv", model=CANDIDATES, fold=FOLDS),
        # each evaluate job writes predictions/ before metrics.json; a folder is not an input here since
        # Snakemake can checksum files only (a pulled folder's new mtime would re-render the report)
        metrics=expand(f"{RES}/eval/{{model}}/fold{{fold}}/metrics.json", model=CANDIDATES, fold=FOLDS),
        cfg=f"{CONF}/report.json",
        dataset=f"{DS}/dataset.json",
        best=f"{RES}/best/README.md",
    output:
        REPORT,
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        ds=lambda wildcards, input: os.path.dirname(input.dataset),
        code=CODE["report"],
    log:
        f"{RES}/logs/report.log",
    conda:
        SEGBENCH_ENV
    shell:
        "segbench report --experiment {params.exp} --dataset-dir {params.ds} --config {input.cfg}"
        " --out {output} > {log} 2>&1"
