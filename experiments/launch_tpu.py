"""Starts experiments/train.py on every worker of a Cloud TPU VM slice and follows it.

python experiments/launch_tpu.py --name=medjax-1b --zone=us-east5-a --topology=v5p-64 --spot \
    --config=configs/llm.py:llama-3.2-1b --workdir=gs://BUCKET/runs/llama-1b \
    -- --config.parallel.mesh.data=1 --config.parallel.mesh.fsdp=-1 --config.model.remat=full

Arguments after `--` are config overrides for every worker. The fit check (experiments/aot_compile.py,
needs libtpu here) runs first; then the slice is created or reused, the committed code is copied to
every worker and installed, the same command starts on all of them, and worker 0's log streams
here. After a spot preemption the slice is recreated and the job resumes from the workdir.
`--dry_run` prints the commands instead. See docs/pods.md.
"""

import os
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("name", None, "TPU VM (slice) name; reused when it exists and is READY.")
flags.DEFINE_string("zone", None, "Cloud zone of the slice, e.g. us-east5-a.")
flags.DEFINE_string("project", "", "Cloud project (default: gcloud's configured project).")
flags.DEFINE_string("topology", None, "Slice, e.g. v5p-64, v5e-256, v6e-64, v4-128.")
flags.DEFINE_string("runtime_version", "", "TPU VM software version (default per generation).")
flags.DEFINE_bool("spot", False, "Create a spot slice (preemptible; the launcher relaunches).")
flags.DEFINE_string("config", None, "Config file as train.py takes it, e.g. configs/llm.py:tiny.")
flags.DEFINE_string("workdir", None, "Shared workdir, gs://BUCKET/PATH for multi-host slices.")
flags.DEFINE_multi_string("env", [], "KEY=VALUE for the training process (repeatable).")
flags.DEFINE_bool("check_fit", True, "Compile the train step for the slice here first.")
flags.DEFINE_integer("max_restarts", 5, "Relaunches after preemptions before giving up.")
flags.DEFINE_bool("attach", False, "Follow a job an earlier launch started (no new job).")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
flags.mark_flags_as_required(["name", "zone", "topology", "config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  from medjax.launch import tpu_vm

  s = tpu_vm.make_slice(
    FLAGS.name, FLAGS.zone, FLAGS.topology, FLAGS.project, FLAGS.runtime_version, FLAGS.spot
  )
  job = tpu_vm.make_job(FLAGS.config, FLAGS.workdir, s, argv[1:], FLAGS.env)
  print(
    f"{s.topology.name}: {s.topology.chips} chips on {s.topology.hosts} worker(s), "
    f"{s.topology.accelerator_type}, runtime {s.version}",
    file=sys.stderr,
  )
  runner = tpu_vm.DryRun() if FLAGS.dry_run else tpu_vm.Runner()
  archive = os.path.join(tempfile.gettempdir(), f"{FLAGS.name}-{tpu_vm.CODE_ARCHIVE}")
  sys.exit(
    tpu_vm.launch(
      runner,
      s,
      job,
      archive,
      check_fit=FLAGS.check_fit,
      max_restarts=FLAGS.max_restarts,
      attach=FLAGS.attach,
    )
  )


if __name__ == "__main__":
  app.run(main)
