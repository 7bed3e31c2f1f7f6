"""`import diffax.discrete` stays in the math layer: no training-stack libraries."""

import subprocess
import sys

FORBIDDEN = ("flax", "optax", "orbax", "grain", "tensorflow_datasets", "tensorflow", "matplotlib")


def test_import_pulls_no_training_stack():
    code = (
        "import sys, diffax.discrete\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_public_names():
    import diffax.discrete as dd

    for name in (
        "Masked",
        "Uniform",
        "General",
        "LinearSchedule",
        "CosineSchedule",
        "LogLinearSchedule",
        "GeometricSchedule",
        "PolynomialSchedule",
        "masked_elbo",
        "antithetic_times",
        "stratified_times",
        "elbo_terms",
        "ELBOTerms",
        "LOSSES",
        "PROCESSES",
        "SCHEDULES",
        "prior_kl_from_marginal",
        "elbo",
        "bits_per_token",
        "sample",
        "sample_categorical",
        "sample_categorical_inverse_cdf",
        "samplers",
        "schedules",
        "losses",
        "loss_fn",
        "score_entropy",
        "ctmc_elbo",
        "flow_matching_ce",
    ):
        assert hasattr(dd, name), name
