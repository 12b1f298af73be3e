"""fashion-mnist-tfx: a TFX pipeline from raw Fashion-MNIST files to a served, blessed model.

Runtime dependencies are pinned in requirements/requirements.lock.txt and installed by
scripts/setup_env.sh without resolution; install_requires stays empty on purpose so that
`pip install -e .` never re-resolves (and never fights the tfx wheels' Python < 3.11 marker).
"""

from setuptools import find_packages, setup

setup(
    name="fashion-mnist-tfx",
    version="0.1.0",
    description="TFX pipeline for Fashion-MNIST: ingestion, validation, training, evaluation, serving",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["cli", "cli.*", "modules", "modules.*", "tfx_pipeline", "tfx_pipeline.*",
                                    "fmnist", "fmnist.*", "reports", "reports.*", "serving", "serving.*", "monitoring",
                                    "monitoring.*"]),
    py_modules=["local_runner", "kubeflow_runner"],
    package_data={"fmnist": ["*.json"], "reports": ["templates/*.j2"], "monitoring": ["templates/*.j2"],
                  "modules": ["*.json"]},
    entry_points={"console_scripts": ["fmnist=cli.main:run"]},
    license="MIT",
)
