rule convert:
    """Raw annotations -> canonical dataset (images/, masks/, dataset.json), written atomically."""
    input:
        cfg=DATASET_CFG,
        raw=list_sources(JOBS["dataset"]),
    output:
        DATASET_JSON,
    log:
        LAYOUT.log("convert.log").as_posix(),
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        code=CODE["convert"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench convert --config {input.cfg} --out {params.out} > {log} 2>&1"


rule validate:
    """Every image has one mask of its size, mask values are classes or ignore_index; few pixels
    ignored and every class present (dataset.max_ignore_share, dataset.allow_absent_classes)."""
    input:
        DATASET_JSON,
    output:
        VALIDATION_JSON,
    log:
        LAYOUT.log("validate.log").as_posix(),
    params:
        limits=VALIDATE_ARGS,
        code=CODE["validate"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench validate --dataset {input} --report {output} {params.limits} > {log} 2>&1"


rule split:
    """splits.json: test ids and folds (group-aware), shared by every model."""
    input:
        dataset=DATASET_JSON,
        validation=VALIDATION_JSON,
        cfg=LAYOUT.step_config("split").as_posix(),
        user_file=SPLIT_FILE,
    output:
        SPLITS,
    log:
        LAYOUT.log("split.log").as_posix(),
    params:
        code=CODE["split"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench split --dataset {input.dataset} --config {input.cfg} --out {output} > {log} 2>&1"
