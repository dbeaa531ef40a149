rule convert:
    """Raw annotations -> canonical dataset (images/, masks/, dataset.json), written atomically."""
    input:
        cfg=DATASET_CFG,
        raw=list_sources(JOBS["dataset"]),
    output:
        f"{DS}/dataset.json",
    log:
        f"{RES}/logs/convert.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        code=CODE["convert"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench convert --config {input.cfg} --out {params.out} > {log} 2>&1"


rule validate:
    """Every image has one mask of its size, mask values are classes or ignore_index."""
    input:
        f"{DS}/dataset.json",
    output:
        f"{DS}/validation.json",
    log:
        f"{RES}/logs/validate.log",
    params:
        code=CODE["validate"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench validate --dataset {input} --report {output} > {log} 2>&1"


rule split:
    """splits.json: test ids and folds (group-aware), shared by every model."""
    input:
        dataset=f"{DS}/dataset.json",
        validation=f"{DS}/validation.json",
        cfg=f"{CONF}/split.json",
    output:
        f"{RES}/splits.json",
    log:
        f"{RES}/logs/split.log",
    params:
        code=CODE["split"],
    conda:
        SEGBENCH_ENV
    shell:
        "segbench split --dataset {input.dataset} --config {input.cfg} --out {output} > {log} 2>&1"
