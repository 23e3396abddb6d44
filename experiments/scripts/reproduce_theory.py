"""The paper's linear-network theory (Tian, Chen & Ganguli 2021, Sec. 2-3) in one command,
with its successors' (DirectSet(alpha), IsoLoss: experiments/theory/successors.py; the
closed-form predictors of Richemond et al. 2023: experiments/theory/closed_form.py).

    python experiments/scripts/reproduce_theory.py [--results_dir DIR] [--smoke]

Integrates the matrix flow (Lemma 1, Eqns. 2-4) and the per-mode flow (Eqns.
11-13) in NumPy, measures every claim of Sec. 2-3 (each ``source`` names the
section, equation, theorem and figure), trains the package's own
``SiameseNetwork`` (linear backbone, no projector, linear predictor,
``loss="l2"``, plain SGD) on the theory's Gaussian data and holds its
trajectories against the ODE. Writes ``DIR/theory.json``, ``DIR/table.md`` and
one PNG per figure, each titled with the paper figure it reproduces or "No paper
figure" (the map is in ``experiments/theory/figures.py``). About 6 minutes on 2
CPU cores; the smoke mode takes seconds (coarse grids, short runs) and checks
nothing numerically.
"""

import datetime
import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("results_dir", os.path.join("results", "reproduce_theory"),
                    "Where theory.json, table.md and the PNGs go.")
flags.DEFINE_boolean("smoke", False, "Coarse grids and short runs (seconds).")
flags.DEFINE_boolean("package", True, "Also train the package's SiameseNetwork against "
                     "the ODE (needs TensorFlow).")


def table_markdown(claims, package, command, date):
    lines = [
        "# The paper's linear theory (Sec. 2-3), measured",
        "",
        f"Command: `{command}` ({date}).",
        "",
        "| id | source | claim | measured | needs | holds | assumptions |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in claims:
        c = {k: v.replace("|", "\\|") if isinstance(v, str) else v for k, v in c.items()}
        lines.append(f"| {c['id']} | {c['source']} | {c['claim']} | {c['measured']:.3g} "
                     f"| {c['threshold']} | {'yes' if c['holds'] else 'NO'} "
                     f"| {c['assumptions']} |")
    if package:
        lines += ["", "## The package's train step against the ODE", "",
                  f"{package['settings']} settings, outcome agreement "
                  f"{package['outcome_agreement']}/{package['settings']}, max relative "
                  f"deviation of (p_j, s_j) {package['max_rel_dev']:.3g} (tolerance "
                  f"{package['tolerance']:g}).", "",
                  "| run | method | eta | alpha_p | beta | init scale | steps | ODE outcome "
                  "| package outcome | max rel dev |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in package["runs"]:
            lines.append(f"| {r['name']} | {r['method']} | {r['eta']:g} | {r['alpha_p']:g} "
                         f"| {r['beta'] if r['beta'] is not None else '-'} "
                         f"| {r['init_scale']:g} | {r['steps']} | {r['ode_outcome']} "
                         f"| {r['package_outcome']} | {r['max_rel_dev']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv):
    from experiments import console
    console.quiet_framework_logs()  # TensorFlow's / XLA's start-up lines, as train.py
    del argv
    from experiments.theory import claims as C
    from experiments.theory import figures

    start = time.time()
    out = FLAGS.results_dir
    os.makedirs(out, exist_ok=True)
    claims, data = C.all_claims(smoke=FLAGS.smoke)
    # The successors (DirectSet(alpha), IsoLoss): docs/successors.md.
    from experiments.theory import successors
    successor_claims, share_runs = successors.all_claims(smoke=FLAGS.smoke)
    claims += successor_claims
    # The closed-form predictors of Richemond et al. 2023: docs/successors.md.
    from experiments.theory import closed_form
    claims += closed_form.all_claims(smoke=FLAGS.smoke)
    print(f"claims: {sum(c['holds'] for c in claims)}/{len(claims)} hold "
          f"({time.time() - start:.0f} s)")
    pngs = figures.write_all(out, data, smoke=FLAGS.smoke)
    pngs.append(successors.figure(share_runs, os.path.join(out, "successors_shares.png")))
    print(f"figures ({time.time() - start:.0f} s)")
    package = None
    if FLAGS.package:
        from experiments.theory import package_run
        package = package_run.compare(smoke=FLAGS.smoke)
        pngs.append(package_run.figure(package, os.path.join(out, "package_vs_ode.png")))
        print(f"package vs ODE: {package['outcome_agreement']}/{package['settings']} "
              f"outcomes agree, max rel dev {package['max_rel_dev']:.3g} "
              f"({time.time() - start:.0f} s)")
    command = "python experiments/scripts/reproduce_theory.py" + (
        " --smoke" if FLAGS.smoke else "")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = {"claims": claims, "command": command, "date": date,
              "smoke": bool(FLAGS.smoke), "figures": [os.path.basename(p) for p in pngs],
              "seconds": time.time() - start}
    if package is not None:
        result["package_vs_ode"] = {k: package[k] for k in (
            "settings", "outcome_agreement", "max_rel_dev", "tolerance", "runs")}
    with open(os.path.join(out, "theory.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table_markdown(claims, package, command, date))
    print(f"wrote {out}/theory.json, table.md, {len(pngs)} PNGs "
          f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    app.run(main)
