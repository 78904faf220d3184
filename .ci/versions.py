"""Print the versions of the package's dependencies in the running environment (for the tox envs' logs)."""

from importlib.metadata import PackageNotFoundError, version

for name in ("adversarial-robustness-toolbox", "torch", "numpy", "scipy", "scikit-learn", "packaging", "tqdm"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"{name}: not installed")
