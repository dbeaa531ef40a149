# Hyper-parameter search (tune.trials > 0 or tune.budget_hours; segbench.tuning, docs/tuning.md). One
# Optuna study per candidate in tune/<model>/study.journal, run in rounds: the checkpoint tune_ask
# tells the study the last round's results and asks the next batch (none: the study is done); each
# trial is an ordinary training job plus an evaluation on the tuning fold's validation images;
# tune_best chooses the best trial and writes the tuned model config the candidate's training jobs use.


checkpoint tune_ask:
    """Round r of a candidate's study: tell round r-1's results, ask the next batch of trials."""
    input:
        previous=TUNE_INPUTS.previous_round,
        dataset=DATASET_JSON,
        splits=SPLITS,
        model=LAYOUT.model_config("{model}").as_posix(),
        train=LAYOUT.step_config("train").as_posix(),
        augment=LAYOUT.step_config("augment").as_posix(),
        tune=LAYOUT.step_config("tune").as_posix(),
        budget=LAYOUT.step_config("tune_budget").as_posix(),
        evaluate=LAYOUT.step_config("evaluate").as_posix(),
    output:
        directory(LAYOUT.tune_asked_dir("{model}", "{round}").as_posix()),
    params:
        study=lambda wildcards: LAYOUT.tune_dir(wildcards.model).as_posix(),
        # part of the study's fingerprint: new tuning code (or library versions) starts a new study
        code=CODE["tune"],
    log:
        LAYOUT.log("tune", "{model}_round{round}_ask.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench tune-ask --study-dir {params.study} --round {wildcards.round} --model-config {input.model}"
        " --tune {input.tune} --evaluate {input.evaluate} --budget {input.budget} --train {input.train} --augment {input.augment}"
        " --dataset {input.dataset} --splits {input.splits} --code {params.code} --previous {input.previous}"
        " --out {output} > {log} 2>&1"


rule tune_trial:
    """One trial: train its configuration on the tuning fold, score it on that fold's validation images
    (the test split is never read), report each epoch to the study for pruning."""
    input:
        trial=LAYOUT.tune_trial_spec("{model}", "{round}", "{trial}").as_posix(),
        dataset=DATASET_JSON,
        splits=SPLITS,
        model=LAYOUT.model_config("{model}").as_posix(),
        train=LAYOUT.step_config("train").as_posix(),
        augment=LAYOUT.step_config("augment").as_posix(),
        tune=LAYOUT.step_config("tune").as_posix(),
        evaluate=LAYOUT.step_config("evaluate").as_posix(),
    output:
        LAYOUT.tune_trial_result("{model}", "{round}", "{trial}").as_posix(),
    params:
        study=lambda wildcards: LAYOUT.tune_dir(wildcards.model).as_posix(),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        code=CODE["tune"],
    log:
        LAYOUT.log("tune", "{model}_round{round}_trial{trial}.log").as_posix(),
    conda:
        SEGBENCH_ENV
    # trials of one round run side by side when the machine can (device=cpu, or several GPUs)
    threads: TUNE_THREADS
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=240,
    shell:
        "segbench tune-trial --trial {input.trial} --study-dir {params.study} --model-config {input.model}"
        " --tune {input.tune} --train {input.train} --augment {input.augment} --dataset {input.dataset}"
        " --splits {input.splits} --code {params.code} --evaluate {input.evaluate} --out {params.out}"
        " --threads {threads}"
        " 2>&1 | tee {log}"


rule tune_best:
    """The candidate's best trial (validation only): best.json, trials.csv, tuned_model.json."""
    input:
        unpack(TUNE_INPUTS.all_rounds),
        dataset=DATASET_JSON,
        splits=SPLITS,
        model=LAYOUT.model_config("{model}").as_posix(),
        train=LAYOUT.step_config("train").as_posix(),
        augment=LAYOUT.step_config("augment").as_posix(),
        tune=LAYOUT.step_config("tune").as_posix(),
        budget=LAYOUT.step_config("tune_budget").as_posix(),
        evaluate=LAYOUT.step_config("evaluate").as_posix(),
    output:
        best=LAYOUT.tune_best("{model}").as_posix(),
        trials=LAYOUT.tune_trials_csv("{model}").as_posix(),
        model=LAYOUT.tuned_model_config("{model}").as_posix(),
    params:
        study=lambda wildcards: LAYOUT.tune_dir(wildcards.model).as_posix(),
        code=CODE["tune"],
    log:
        LAYOUT.log("tune", "{model}_best.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench tune-best --study-dir {params.study} --model-config {input.model} --tune {input.tune}"
        " --evaluate {input.evaluate} --budget {input.budget}"
        " --train {input.train} --augment {input.augment} --dataset {input.dataset} --splits {input.splits}"
        " --code {params.code} --last-round {input.last} --trials {input.trials} 2>&1 | tee {log}"
