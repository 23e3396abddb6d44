"""The package's own SiameseNetwork train step against the linear ODE (paper Sec. 2-3),
at a small size, and reproduce_theory.py --smoke end to end."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.theory import package_run as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def _other_weight_decay(run):
    return {"eta": run.eta * 3 + 0.1}


def _other_alpha(run):
    return {"set_alpha": run.set_alpha * 4}


@pytest.mark.parametrize("run, other", [
    (P.Run("t_simsiam", "simsiam", eta=0.05, steps=300, dim=3, lr=0.01, batch_size=512,
           num_examples=16384, record_every=50), _other_weight_decay),
    (P.Run("t_byol", "byol", eta=0.3, beta=2.0, alpha_p=2.0, steps=300, dim=3, lr=0.01,
           batch_size=512, num_examples=16384, record_every=50, isotropic=False),
     _other_weight_decay),
    # The successors (docs/successors.md): DirectSet(1) with EMA, IsoLoss on DirectSet(1/2).
    (P.Run("t_directset", "directset", eta=0.05, beta=1.0, set_alpha=1.0, eps=0.25, steps=300,
           dim=3, lr=0.005, batch_size=1024, num_examples=16384, record_every=50,
           corr_rho=0.7), _other_alpha),
    (P.Run("t_isoloss", "directset", eta=0.02, set_alpha=0.5, eps=0.0, isoloss=True,
           steps=300, dim=3, lr=0.005, batch_size=1024, num_examples=16384, record_every=50,
           corr_rho=0.7), _other_alpha),
], ids=lambda r: getattr(r, "name", None))
def test_package_follows_the_ode(run, other):
    data, X, Xt = P.sample(run)
    _, pkg = P.run_package(run, data, Xt)
    ode = P.run_ode(run, X, Xt)
    dev, _ = P.deviation(pkg, ode, X)
    assert dev < P.TOLERANCE
    assert P.outcome(pkg, X) == P.outcome(ode, X)
    # The comparison can fail: the ODE of another weight decay (or alpha) is far off.
    wrong = P.run_ode(dataclasses.replace(run, **other(run)), X, Xt)
    assert P.deviation(pkg, wrong, X)[0] > 2 * P.TOLERANCE
    # The weights moved (not a trivially passing comparison).
    assert np.linalg.norm(pkg[-1].W - pkg[0].W) > 0.05 * np.linalg.norm(pkg[0].W)


def test_make_config_maps_the_ode_parameters():
    run = P.Run("m", "byol", eta=0.05, alpha_p=2.0, beta=0.5, lr=0.01)
    c = P.make_config(run)
    assert (c.backbone, c.projector, c.predictor, c.loss) == ("linear", "none", "linear", "l2")
    assert c.weight_decay == pytest.approx(0.2)
    assert c.predictor_weight_decay == pytest.approx(0.1)
    assert c.ema_tau == pytest.approx(1 - 0.5 * 0.04)
    assert c.momentum == 0.0 and c.predictor_lr_multiplier == 2.0
    with pytest.raises(ValueError, match="beta"):
        P.make_config(P.Run("m", "byol", beta=None))


def test_reproduce_theory_smoke(tmp_path):
    out = tmp_path / "theory"
    subprocess.run([sys.executable, "experiments/scripts/reproduce_theory.py", "--smoke",
                    "--results_dir", str(out)], check=True, cwd=ROOT)
    result = json.loads((out / "theory.json").read_text())
    assert result["smoke"] is True
    ids = [c["id"] for c in result["claims"]]
    assert len(ids) == len(set(ids)) >= 20
    for c in result["claims"]:
        assert set(c) >= {"id", "source", "measured", "holds"}
        assert isinstance(c["holds"], bool) and np.isfinite(c["measured"])
    pv = result["package_vs_ode"]
    assert pv["settings"] >= 1 and 0 <= pv["outcome_agreement"] <= pv["settings"]
    assert np.isfinite(pv["max_rel_dev"])
    for name in result["figures"]:
        assert (out / name).stat().st_size > 10_000
    table = (out / "table.md").read_text()
    assert "lemma1_rhs_is_gradient" in table and "--smoke" in table
