rule train:
    """One model on one fold with one training seed. Sees only its model config, the recipes, the split
    and the dataset."""
    input:
        # the dataset rescaled to the training scale when the recipe has one (preprocessed/)
        dataset=lambda w: TRAIN_DATASETS.get(w.model, TRAIN_DATASET),
        splits=SPLITS,
        # what the plan decided for this model, when the recipe leaves keys to it
        plan=lambda w: [LAYOUT.plan_decisions(w.model).as_posix()] if PLANNED else [],
        # the tuned config (tune/<model>/tuned_model.json) when the experiment tunes
        model=lambda w: MODEL_CONFIGS.get(w.model, LAYOUT.model_config(w.model).as_posix()),
        train=LAYOUT.step_config("train").as_posix(),
        augment=LAYOUT.step_config("augment").as_posix(),
        # a model that starts from files (another run's trained weights, a local encoder_weights file)
        # depends on their content
        start=lambda w: start_weight_files(CFG["model"].get(w.model, {})),
    output:
        **named_files(MODEL_DIR, TRAIN_FILES),
    params:
        # the cache key holds params, not wildcards: both are here; no path (it names the experiment)
        model="{model}",
        fold="{fold}",
        seed="{seed}",
        plan="--plan" if PLANNED else "",
        code=CODE["train"],
    cache: True
    log:
        LAYOUT.job_log("train", "{model}", "{fold}", "{seed}").as_posix(),
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=TRAIN_GPUS,
        mem_mb=8000,
        runtime=240,
    # the logger config (configs/logger.json, beside train.json) is read but is not an input: where a
    # job logs to is not part of what it computes, nor of its cache key
    shell:
        "segbench train --dataset {input.dataset} --splits {input.splits} --fold {params.fold} --seed {params.seed}"
        " --model {input.model} --train {input.train} --augment {input.augment}"
        " --logger $(dirname {input.train})/logger.json"
        " --out $(dirname {output.model_safetensors}) --threads {threads} {params.plan} {input.plan}"
        " 2>&1 | tee {log}"
