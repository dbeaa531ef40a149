# The training plan (train recipe keys set to `plan`: config/train/planned.yaml, what segbench init writes;
# segbench.plan, docs/plan.md): the dataset's fingerprint, the plan (scale, patch, batch size and epochs
# per model, loss), and the dataset rescaled to the plan's scale that the training jobs read.


rule fingerprint:
    """fingerprint.json: image sizes, intensities, class frequencies, object sizes of the dataset."""
    input:
        dataset=DATASET_JSON,
        validation=VALIDATION_JSON,
    output:
        FINGERPRINT_JSON,
    log:
        LAYOUT.log("fingerprint.log").as_posix(),
    params:
        code=CODE["fingerprint"],
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    shell:
        "segbench fingerprint --dataset {input.dataset} --out {output} --threads {threads} > {log} 2>&1"


rule plan:
    """plan.json (every decision and its reason) and plan/<model>.json (what each model's training reads)."""
    input:
        fingerprint=FINGERPRINT_JSON,
        splits=SPLITS,
        train=LAYOUT.step_config("train").as_posix(),
        plan=LAYOUT.step_config("plan").as_posix(),
        models=list(MODEL_CONFIGS.values()),
    output:
        plan=LAYOUT.plan_json.as_posix(),
        scale=(LAYOUT.root / "plan_scale.json").as_posix(),
        decisions=[LAYOUT.plan_decisions(m).as_posix() for m in MODELS],
    log:
        LAYOUT.log("plan.log").as_posix(),
    params:
        code=CODE["plan"],
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        gpu=GPU,
    shell:
        "segbench plan --fingerprint {input.fingerprint} --splits {input.splits} --train {input.train}"
        " --plan-config {input.plan} --model-configs {input.models} --out {output.plan} --threads {threads}"
        " > {log} 2>&1"


rule preprocess:
    """The dataset rescaled to the training scale (the plan's, or train.scale)."""
    input:
        dataset=DATASET_JSON,
        scale=SCALE_SOURCE,
    output:
        LAYOUT.preprocessed_json.as_posix(),
    log:
        LAYOUT.log("preprocess.log").as_posix(),
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        code=CODE["preprocess"],
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    shell:
        "segbench preprocess --dataset {input.dataset} --scale-from {input.scale} --out {params.out}"
        " --threads {threads} > {log} 2>&1"
