"""The SLURM profile, for real: a one-node SLURM cluster (Debian's slurm-wlm + munge, all daemons on
loopback, state in a temporary folder) runs a small experiment through
`segbench run --profile slurm`, i.e. `snakemake --profile workflow/profiles/slurm`; every job must go
through sbatch and complete there.

Needs root and Debian's packages: `apt-get install slurm-wlm munge slurm-client` (.ci/run installs
them). Accounting (sacct) needs slurmdbd and a MariaDB server, so the cluster records finished jobs
with SLURM's job-completion plugin (jobcomp/filetxt) instead, and the test reads that log and
`scontrol show job`.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    missing = [b for b in NEEDED if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        pytest.fail(
            f"SLURM is not installed (missing {', '.join(missing)}): run "
            "`apt-get install -y slurm-wlm munge slurm-client` as root (.ci/run does)"
        )
    if os.geteuid() != 0:
        pytest.fail("the one-node SLURM test starts munged, slurmctld and slurmd, which needs root")
    base = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "run", "log", "bin", "munge"):
        (base / d).mkdir()
    os.chmod(base / "munge", 0o700)
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(f"""ClusterName=segbench
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={base}/run/munge.socket
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=300
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN
PartitionName=segbench Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    # inside a job the jobstep plugin drops SLURM_CONF before calling srun: a wrapper puts it back
    srun = base / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nexport SLURM_CONF={conf}\nexec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{base / 'bin'}{os.pathsep}{os.environ['PATH']}")
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"  # noqa: E731
    subprocess.run(
        [sbin("mungekey"), "-c", "-f", "-k", str(base / "munge" / "munge.key")], check=True, env=env
    )
    try:
        subprocess.run(
            [
                sbin("munged"),
                f"--socket={base}/run/munge.socket",
                f"--key-file={base}/munge/munge.key",
                f"--pid-file={base}/run/munged.pid",
                f"--log-file={base}/log/munged.log",
                f"--seed-file={base}/run/munge.seed",
                "--force",
            ],
            check=True,
            env=env,
        )
        subprocess.run([sbin("slurmctld")], check=True, env=env)
        subprocess.run([sbin("slurmd")], check=True, env=env)
        deadline = time.time() + 60
        while (
            "idle"
            not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
        ):
            assert time.time() < deadline, (base / "log" / "slurmctld.log").read_text()[-3000:]
            time.sleep(0.5)
        yield {"env": env, "base": base, "partition": "segbench"}
    finally:
        subprocess.run(["scancel", "--partition=segbench"], env=env, capture_output=True)
        for name in ("slurmd", "slurmctld", "munged"):
            _kill_pidfile(base / "run" / f"{name}.pid")


@pytest.mark.slow
def test_slurm_profile_runs_every_job_through_sbatch(tmp_path, slurm_cluster):
    env = dict(slurm_cluster["env"], NO_ALBUMENTATIONS_UPDATE="1")
    env.pop("SNAKEMAKE_OUTPUT_CACHE", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    work = tmp_path / "work"
    cpus = os.cpu_count()
    args = [
        sys.executable,
        "-m",
        "segbench.cli",
        "run",
        "experiment=grapes_quick",
        "models=[smp_unet_r18]",
        "train.epochs=1",
        "train.image_size=[64,96]",
        "name=slurm",
        "device=cpu",
        "select.onnx=false",
        "deploy.variants=[]",
        # tuning: two trials in one round, as two sbatch jobs reporting to one journal file
        "tune.trials=2",
        "tune.batch=2",
        "tune.pruner.name=median",
        "--workdir",
        str(work),
        "--profile",
        "slurm",
        "--snakemake-args",
        # what a user adds for their cluster; the last four suit a one-node cluster without accounting
        "--default-resources",
        f"slurm_partition={slurm_cluster['partition']}",
        "runtime=20",
        "mem_mb=1000",
        "--set-threads",
        f"train={cpus}",
        f"evaluate={cpus}",
        "tune_trial=1",
        "best=1",
        "--set-resources",
        "train:mem_mb=3000",
        "evaluate:mem_mb=3000",
        "tune_trial:mem_mb=2500",
        "--slurm-no-account",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
    ]
    # Snakemake ignores SIGTERM here: bound it with a hard kill of its whole process group
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("the SLURM run did not finish in 20 minutes:\n" + out[-4000:])
    assert proc.returncode == 0, out[-6000:]

    # every job was submitted with sbatch, one SLURM job per Snakemake job, and completed there
    submitted = dict(
        re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+?)[/)]", out)
    )
    assert set(submitted.values()) == {
        "convert",
        "validate",
        "split",
        "tune_ask",
        "tune_trial",
        "tune_best",
        "train",
        "evaluate",
        "aggregate",
        "best",
        "report",
    }, out[-4000:]
    completed = {}
    for line in (slurm_cluster["base"] / "log" / "jobcomp.log").read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        completed[fields["JobId"]] = fields
    for jobid, rule in submitted.items():
        assert completed[jobid]["JobState"] == "COMPLETED", (rule, completed[jobid])
        assert completed[jobid]["WorkDir"] == str(work)
        assert completed[jobid]["Partition"] == slurm_cluster["partition"]
    # the two trials were two sbatch jobs that ran side by side (1 core each), one journal between them
    trials = [completed[j] for j, r in submitted.items() if r == "tune_trial"]
    assert len(trials) == 2, trials
    (s0, e0), (s1, e1) = sorted((t["StartTime"], t["EndTime"]) for t in trials)
    assert s1 < e0, f"the trial jobs ran one after the other: {trials}"
    study = work / "results" / "slurm" / "tune" / "smp_unet_r18"
    best = __import__("json").loads((study / "best.json").read_text())
    assert best["trials"] == 2 and best["complete"] == 2 and (study / "study.journal").is_file()
    train_id = next(j for j, r in submitted.items() if r == "train")
    assert f"cpu={cpus}" in completed[train_id]["Tres"] and "mem=3000M" in completed[train_id]["Tres"]
    shown = subprocess.run(
        ["scontrol", "show", "job", train_id], env=env, capture_output=True, text=True
    ).stdout
    assert "JobState=COMPLETED" in shown and f"WorkDir={work}" in shown
    # and produced the experiment's results on the shared file system
    summary = (work / "results" / "slurm" / "summary.json").read_text()
    assert '"smp_unet_r18"' in summary and (work / "results" / "slurm" / "report" / "index.html").is_file()
