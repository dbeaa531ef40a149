rule aggregate:
    """summary.csv/json (one row per model), learning_curves.csv, selection.json (on validation only)."""
    input:
        metrics=LAYOUT.eval_files("metrics.json", CANDIDATES, FOLDS, SEEDS),
        timing=LAYOUT.eval_files("timing.json", CANDIDATES, FOLDS, SEEDS),
        per_image=LAYOUT.eval_files("confusion_per_image.npy", CANDIDATES, FOLDS, SEEDS),
        val=LAYOUT.eval_files("val_confusion.npy", CANDIDATES, FOLDS, SEEDS),
        meta=LAYOUT.model_files("train_meta.json", MODELS, FOLDS, SEEDS),
        history=LAYOUT.model_files("history.csv", MODELS, FOLDS, SEEDS),
        models=list(MODEL_CONFIGS.values()),
        tuning=[LAYOUT.tune_best(m).as_posix() for m in MODELS] if TUNE else [],
        validation=VALIDATION_JSON,
        dataset=DATASET_JSON,
        splits=SPLITS,
        select=LAYOUT.step_config("select").as_posix(),
    output:
        summary=LAYOUT.summary_json.as_posix(),
        table=LAYOUT.summary_csv.as_posix(),
        curves=LAYOUT.learning_curves.as_posix(),
        selection=LAYOUT.selection.as_posix(),
        provenance=LAYOUT.provenance.as_posix(),
    params:
        exp=lambda wildcards, output: os.path.dirname(output.summary),
        ds=lambda wildcards, input: os.path.dirname(input.validation),
        folds=N_FOLDS,
        seeds=" ".join(map(str, SEEDS)),
        ensembles=" ".join(ENSEMBLES),
        tuned="--tuned" if TUNE else "",
        code=CODE["aggregate"],
    log:
        LAYOUT.log("aggregate.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench aggregate --experiment {params.exp} --dataset-dir {params.ds} --folds {params.folds}"
        " --seeds {params.seeds} --model-configs {input.models} --select {input.select}"
        " --ensembles {params.ensembles} {params.tuned} 2>&1 | tee {log}"


rule best:
    """best/: the selected model ready to use (weights, config, classes, preprocessing, ONNX + parity, model card)."""
    input:
        selection=LAYOUT.selection.as_posix(),
        summary=LAYOUT.summary_json.as_posix(),
        weights=LAYOUT.model_files("model.safetensors", MODELS, FOLDS, SEEDS),
        ensembles=LAYOUT.model_files("ensemble.json", ENSEMBLES, FOLDS, SEEDS),
        dataset=DATASET_JSON,
        select=LAYOUT.step_config("select").as_posix(),
        evaluate=LAYOUT.step_config("evaluate").as_posix(),
    # README.md is written last, into a temporary folder renamed as a whole; the model card and
    # onnx_parity.json exist only when a model was selectable (and select.onnx is on)
    output:
        readme=LAYOUT.best_file("README.md").as_posix(),
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        ds=lambda wildcards, input: os.path.dirname(input.dataset),
        code=CODE["best"],
    log:
        LAYOUT.log("best.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench best --experiment {params.exp} --dataset-dir {params.ds} --select {input.select}"
        " --evaluate {input.evaluate} 2>&1 | tee {log}"


rule report:
    """report/index.html: self-contained (plots embedded), readable offline."""
    input:
        summary=LAYOUT.summary_json.as_posix(),
        selection=LAYOUT.selection.as_posix(),
        curves=LAYOUT.learning_curves.as_posix(),
        per_image=LAYOUT.eval_files("per_image.csv", CANDIDATES, FOLDS, SEEDS),
        confusion=LAYOUT.eval_files("confusion.npy", CANDIDATES, FOLDS, SEEDS),
        metrics=LAYOUT.eval_files("metrics.json", CANDIDATES, FOLDS, SEEDS),
        # the overlays read fold 0's predicted masks (first seed); ancient: a folder's mtime (a fresh
        # checkout, a `dvc pull`) is not a change, its evaluation job's metrics.json above is
        predictions=[ancient(LAYOUT.predictions_dir(m, 0, SEEDS[0]).as_posix()) for m in CANDIDATES],
        cfg=LAYOUT.step_config("report").as_posix(),
        select=LAYOUT.step_config("select").as_posix(),
        dataset=DATASET_JSON,
        # best/ as a whole (the ONNX parity the page states): README.md is its last file
        readme=LAYOUT.best_file("README.md").as_posix(),
        plan=[LAYOUT.plan_json.as_posix()] if PLANNED else [],
        deploy=[DEPLOY_SUMMARY] if DEPLOY_VARIANTS else [],
    output:
        REPORT,
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        ds=lambda wildcards, input: os.path.dirname(input.dataset),
        plan="--plan" if PLANNED else "",
        deploy="--deploy" if DEPLOY_VARIANTS else "",
        code=CODE["report"],
    log:
        LAYOUT.log("report.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench report --experiment {params.exp} --dataset-dir {params.ds} --config {input.cfg}"
        " --select {input.select} {params.plan} {input.plan} {params.deploy} {input.deploy} --out {output}"
        " > {log} 2>&1"
