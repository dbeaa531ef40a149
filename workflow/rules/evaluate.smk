rule evaluate:
    """Validation and test metrics of one model x fold x seed from segbench's one confusion-matrix implementation."""
    wildcard_constraints:
        model=r"(?!ensemble_top\d+/)[A-Za-z0-9_.-]+",
    input:
        weights=f"{MODEL_DIR}/model.safetensors",
        info=f"{MODEL_DIR}/model.json",
        dataset=DATASET_JSON,
        splits=SPLITS,
        cfg=LAYOUT.step_config("evaluate").as_posix(),
    output:
        **named_files(EVAL_DIR, EVAL_FILES),
        predictions=directory(f"{EVAL_DIR}/predictions"),
    params:
        model="{model}",
        fold="{fold}",
        seed="{seed}",
        code=CODE["evaluate"],
        ckpt=lambda wildcards, input: os.path.dirname(input.weights),
        out=lambda wildcards, output: os.path.dirname(output.metrics_json),
    log:
        LAYOUT.job_log("evaluate", "{model}", "{fold}", "{seed}").as_posix(),
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
    """Softmax-averaging ensemble of the top-k models (ranked on validation only, over every fold and
    seed; models that learned nothing left out), one per fold x seed, evaluated like a model."""
    wildcard_constraints:
        k=r"\d+",
    input:
        val=LAYOUT.eval_files("val_confusion.npy", MODELS, FOLDS, SEEDS),
        # this fold x seed's members (chosen over every fold and seed)
        weights=lambda w: LAYOUT.model_files("model.safetensors", MODELS, [w.fold], [w.seed]),
        dataset=DATASET_JSON,
        validation=VALIDATION_JSON,
        splits=SPLITS,
        select=LAYOUT.step_config("select").as_posix(),
        cfg=LAYOUT.step_config("evaluate").as_posix(),
    output:
        **named_files(ENSEMBLE_EVAL_DIR, EVAL_FILES),
        predictions=directory(f"{ENSEMBLE_EVAL_DIR}/predictions"),
        spec=LAYOUT.model_file(ensemble_name("{k}"), "{fold}", "{seed}", "ensemble.json").as_posix(),
    params:
        exp=lambda wildcards, input: os.path.dirname(input.splits),
        folds=N_FOLDS,
        seeds=" ".join(map(str, SEEDS)),
        models=" ".join(MODELS),
        out=lambda wildcards, output: os.path.dirname(output.metrics_json),
        code=CODE["ensemble"],
    log:
        LAYOUT.job_log("evaluate", ensemble_name("{k}"), "{fold}", "{seed}").as_posix(),
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
        " --seed {wildcards.seed} --folds {params.folds} --seeds {params.seeds} --models {params.models}"
        " --validation {input.validation} --threads {threads} > {log} 2>&1"
