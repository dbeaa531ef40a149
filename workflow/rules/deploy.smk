# Deployment variants of the selected model (deploy.variants): each built from best/ and scored by
# segbench's own evaluation on the same images as the PyTorch model; a variant that fails or cannot
# run on this machine is recorded in its variant.json with the reason, and the run goes on.


rule deploy_variant:
    """deploy/<variant>/: one ONNX FP32 / INT8 / FP16 or PyTorch bf16 variant of best/, evaluated."""
    wildcard_constraints:
        variant="|".join(DEPLOY_VARIANTS) or "none",
    input:
        # best/ as a whole (README.md is its last file)
        readme=LAYOUT.best_file("README.md").as_posix(),
        dataset=DATASET_JSON,
        splits=SPLITS,
        evaluate=LAYOUT.step_config("evaluate").as_posix(),
        deploy=LAYOUT.step_config("deploy").as_posix(),
    output:
        (LAYOUT.root / "deploy" / "{variant}" / "variant.json").as_posix(),
    params:
        best=lambda wildcards, input: os.path.dirname(input.readme),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        code=CODE["deploy"],
    log:
        LAYOUT.log("deploy", "{variant}.log").as_posix(),
    conda:
        SEGBENCH_ENV
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "segbench deploy --variant {wildcards.variant} --best {params.best} --dataset {input.dataset}"
        " --splits {input.splits} --evaluate {input.evaluate} --deploy {input.deploy} --out {params.out}"
        " --threads {threads} > {log} 2>&1"


rule deploy_summary:
    """deploy/summary.json: the variants beside the PyTorch model (test mIoU with CIs, paired verdicts,
    ms per image, memory, size)."""
    input:
        variants=[(LAYOUT.root / "deploy" / v / "variant.json").as_posix() for v in DEPLOY_VARIANTS],
        selection=LAYOUT.selection.as_posix(),
        summary=LAYOUT.summary_json.as_posix(),
        dataset=DATASET_JSON,
        select=LAYOUT.step_config("select").as_posix(),
    output:
        DEPLOY_SUMMARY,
    params:
        exp=lambda wildcards, input: os.path.dirname(input.summary),
        variants=" ".join(DEPLOY_VARIANTS),
        code=CODE["deploy"],
    log:
        LAYOUT.log("deploy", "summary.log").as_posix(),
    conda:
        SEGBENCH_ENV
    shell:
        "segbench deploy-summary --experiment {params.exp} --dataset {input.dataset}"
        " --variants {params.variants} --select {input.select} --out {output} > {log} 2>&1"
