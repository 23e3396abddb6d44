"""Every theory PNG is titled with the paper's figure number, or says that the
paper has none and names the theorem / equation it shows instead. The titles are
read back from the drawn matplotlib Figures (smoke size), and each must lie
inside its figure (not cut off)."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from experiments.theory import claims as C  # noqa: E402
from experiments.theory import figures  # noqa: E402
from experiments.theory import package_run  # noqa: E402

# PNG name -> (how the suptitle starts, how each panel title starts). Written out
# here, not taken from figures.py, so that a title losing its figure number fails.
EXPECTED = {
    "fig3_phase_portraits_eta": ("Paper Fig. 3 (Sec. 3.2, Eqns. 11-12", ["eta = "] * 4),
    "alpha_p_basins": ("No paper figure (Sec. 3.2, Obs#1", ["alpha_p = "] * 4),
    "ema_beta_basins": ("No paper figure (Sec. 3.2, Obs#8-10, Eqns. 11-13",
                        ["no EMA", "EMA beta = ", "EMA beta = ", "EMA beta = "]),
    "fig9_alignment_balance": ("Left: paper Fig. 9 (App. B.1; Theorem 3",
                               ["Paper Fig. 9 / Theorem 3 (Eqns. 8-10)",
                                "Theorem 1 (Eq. 5), no paper figure"]),
}
PACKAGE_PREFIX = "No paper figure (Lemma 1, Sec. 2, Eqns. 2-4"


def check_titles(name, fig, suptitle_prefix, panel_prefixes):
    """The title rules; raises AssertionError when one is broken."""
    suptitle = fig.get_suptitle()
    assert suptitle.startswith(suptitle_prefix), (name, suptitle)
    number = re.match(r"fig(\d+)_", name)
    if number:  # the file name and the title carry the same paper figure
        assert re.search(rf"[Pp]aper Fig\. {number.group(1)}\b", suptitle), (name, suptitle)
    else:  # no counterpart: say so, and cite what it shows instead
        assert suptitle.startswith("No paper figure"), (name, suptitle)
        assert re.search(r"(Sec\.|Eqns?\.|Theorem|Lemma) \d", suptitle), (name, suptitle)
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(panels) == len(panel_prefixes), (name, panels)
    for title, prefix in zip(panels, panel_prefixes):
        assert title.startswith(prefix), (name, title)
    fig.canvas.draw()
    box = fig.bbox
    texts = [fig._suptitle] + [ax.title for ax in fig.axes if ax.get_title()]
    for text in texts:
        ext = text.get_window_extent()
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, (name, text.get_text())
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, (name, text.get_text())


@pytest.fixture(scope="module")
def drawn():
    runs = C.alignment_runs(t_end=2.0, dt=0.1)
    figs = figures.draw_all({"alignment": runs}, smoke=True)
    yield figs
    for fig in figs.values():
        plt.close(fig)


def test_every_png_is_titled_with_its_paper_figure(drawn):
    assert set(drawn) == set(EXPECTED) == set(figures.TITLE_PREFIX)
    for name, fig in drawn.items():
        check_titles(name, fig, *EXPECTED[name])


def test_a_title_without_its_figure_number_fails(drawn):
    fig = drawn["fig3_phase_portraits_eta"]
    old = fig.get_suptitle()
    try:
        fig.suptitle(old.replace("Paper Fig. 3 ", "Paper "))
        with pytest.raises(AssertionError):
            check_titles("fig3_phase_portraits_eta", fig, "Paper", EXPECTED[
                "fig3_phase_portraits_eta"][1])
    finally:
        fig.suptitle(old)


def test_write_all_names_the_pngs_as_mapped(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(figures, "draw_all", lambda data, smoke=False: {
        name: plt.figure() for name in figures.TITLE_PREFIX})
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, path, **kw: saved.append(path))
    paths = figures.write_all(str(tmp_path), {}, smoke=True)
    assert paths == saved == [str(tmp_path / f"{n}.png") for n in figures.TITLE_PREFIX]


@pytest.mark.parametrize("n_runs", [1, 4])  # 1: the smoke run; 4: the full run
def test_package_vs_ode_png_says_it_has_no_paper_figure(n_runs):
    t = np.arange(5)
    traj = {k: np.ones((5, 2)) for k in ("s_ode", "s_pkg", "p_ode", "p_pkg")}
    names = ["simsiam", "byol", "directpred", "byol_anisotropic"][:n_runs]
    runs = [{"name": name, "record_steps": t.tolist(), "dt": 0.1, "trajectory": traj,
             "eta": 0.05, "alpha_p": 1.0, "beta": None, "max_rel_dev": 0.01}
            for name in names]
    summary = {"runs": runs, "settings": 19, "outcome_agreement": 19, "max_rel_dev": 0.0324}
    fig = package_run.draw(summary)
    try:
        assert package_run.TITLE_PREFIX == PACKAGE_PREFIX
        check_titles("package_vs_ode", fig, PACKAGE_PREFIX,
                     [f"{n}: s_j" for n in names] + [f"{n}: p_j" for n in names])
    finally:
        plt.close(fig)
