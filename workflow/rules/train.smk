rule train:
    """One model on one fold. Sees only its model config, the recipes, the split and the dataset."""
    input:
        dataset=f"{DS}/dataset.json",
        splits=f"{RES}/splits.json",
        model=f"{CONF}/models/{{model}}.json",
        train=f"{CONF}/train.json",
        augment=f"{CONF}/augment.json",
        # a model that starts from files (another run's trained weights, a local encoder_weights file)
        # depends on their content
        start=lambda w: start_weight_files(CFG["model"].get(w.model, {})),
    output:
        weights=f"{RES}/models/{{model}}/fold{{fold}}/model.safetensors",
        last=f"{RES}/models/{{model}}/fold{{fold}}/last.safetensors",
        info=f"{RES}/models/{{model}}/fold{{fold}}/model.json",
        history=f"{RES}/models/{{model}}/fold{{fold}}/history.csv",
        meta=f"{RES}/models/{{model}}/fold{{fold}}/train_meta.json",
    params:
        # the cache key holds params, not wildcards: both are here; no path (it names the experiment)
        model="{model}",
        fold="{fold}",
        code=CODE["train"],
    cache: True
    log:
        f"{RES}/logs/train/{{model}}_fold{{fold}}.log",
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=8000,
        runtime=240,
    shell:
        "segbench train --dataset {input.dataset} --splits {input.splits} --fold {params.fold}"
        " --model {input.model} --train {input.train} --augment {input.augment}"
        " --out $(dirname {output.weights}) --threads {threads} 2>&1 | tee {log}"
