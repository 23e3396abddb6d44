"""Pre-train a Siamese SSL model, then fit the linear probe.

    python train.py --model directpred --eigenspace --name run
    python train.py --config direct_pred_freq_5 --name run5 --epochs_pretraining 10
    python train.py --model directpred --set predictor_eps=0.05 --set corr_rho=0.5 --name r

Flags override the chosen factory's values (flags left unset keep them), and so does
``--set FIELD=VALUE`` for any Config field; the effective config is saved to
RESULTS_DIR/NAME/config.json. See README.md.
Under ``KERAS_BACKEND=jax`` the same flags train on one device from in-memory
arrays (``--dataset synthetic|folder``; docs/backends.md).
"""

import json
import os
import signal
import sys
import threading

from absl import flags

import config as config_lib
from experiments import console, run_folder

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, sorted(config_lib.MODELS),
                  "Method; picks its factory. byol when neither --model nor --config is given. "
                  "Exclusive with --config.")
flags.DEFINE_string("config", None, "Any factory name (listed above), e.g. direct_pred_freq_5. "
                    "Exclusive with --model.")
flags.DEFINE_string("name", None, "Run name: results go to RESULTS_DIR/NAME.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_boolean("resume", False, "Continue RESULTS_DIR/NAME from its last completed epoch.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing RESULTS_DIR/NAME.")
flags.DEFINE_integer("verbose", 1, "0: only the result; 1: one line per epoch (and a "
                     "progress line on a terminal); 2: also TensorFlow / JAX start-up logs.")
# Overrides of Config fields; None keeps the factory's value.
flags.DEFINE_integer("epochs_pretraining", None, "Pre-training epochs.")
flags.DEFINE_integer("epochs_finetuning", None, "Linear-probe epochs.")
flags.DEFINE_float("probe_learning_rate", None, "Probe Adam learning rate of the official "
                   "mini-batch loop.")
flags.DEFINE_float("probe_weight_decay", None, "Probe coupled L2 weight decay.")
flags.DEFINE_integer("probe_batch_size", None, "Probe batch of the official loop.")
flags.DEFINE_enum("probe_protocol", None, list(config_lib.PROBE_PROTOCOLS),
                  "official: luckmatters' mini-batch Adam loop; full_batch: the same objective "
                  "by full-batch Adam to convergence; auto (default): official where it has "
                  "the published number of steps, else full_batch.")
flags.DEFINE_boolean("symmetry", None, "Symmetry regularisation of the predictor.")
flags.DEFINE_boolean("eigenspace", None, "Track eigenspace alignment of Wp and F.")
flags.DEFINE_enum("loss", None, list(config_lib.LOSSES),
                  "Non-contrastive loss: cosine (BYOL / SimSiam) or l2, the "
                  "paper's un-normalised ||Wp W x1 - sg(Wa x2)||^2 (Sec. 2, Eq. 1).")
flags.DEFINE_boolean("one_layer_predictor", None,
                     "Linear predictor trained by SGD (BYOL and SimSiam configs only).")
flags.DEFINE_string("dataset", None, "cifar10 | stl10 | tf_flowers | any tfds name | "
                    "synthetic | folder (with --data_dir ROOT/{train,test}/<class>/).")
flags.DEFINE_string("data_dir", None, "Image-folder root (--dataset folder) or tfds data dir.")
flags.DEFINE_integer("image_size", None, "Image size (a dataset preset sets 96 for STL-10).")
flags.DEFINE_integer("batch_size", None, "Pre-training batch size.")
flags.DEFINE_integer("max_train_examples", None, "Deterministic train subset size.")
flags.DEFINE_integer("max_test_examples", None, "Deterministic test subset size.")
flags.DEFINE_integer("validation_examples", None,
                     "Hold out N train examples as the probe / kNN evaluation split (for "
                     "tuning; the test split is then not read). Default 0: test split.")
flags.DEFINE_enum("backbone", None, list(config_lib.BACKBONES),
                 "Encoder (models/backbones.py).")
flags.DEFINE_float("width", None, "Encoder channel multiplier (1 = published ResNet-18).")
flags.DEFINE_enum("mixed_precision", None, list(config_lib.MIXED_PRECISION),
                  "Keras mixed-precision policy (loss and F stay float32).")
flags.DEFINE_boolean("jit_compile", None, "XLA-compile the train step.")
flags.DEFINE_enum("strategy", None, list(config_lib.STRATEGIES),
                  "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                  "multiworker (hosts from TF_CONFIG) or tpu. --batch_size is global.")
flags.DEFINE_enum("augment_on", None, list(config_lib.AUGMENT_ON),
                  "Augment in the tf.data pipeline (host) or inside the train step (device).")
flags.DEFINE_integer("knn_every", None, "kNN monitor every N epochs and at the last (0 = off).")
flags.DEFINE_integer("eigenspace_every", None,
                     "Eigenspace snapshot at epoch 0, every N epochs and at the last.")
flags.DEFINE_integer("seed", None, "Random seed.")
# Optimisation (models/optimizers.py); the factories use the paper's SGD recipe.
flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS),
                  "Pre-training optimizer.")
flags.DEFINE_float("base_lr", None, "Base learning rate, before --lr_scaling.")
flags.DEFINE_enum("lr_schedule", None, list(config_lib.LR_SCHEDULES),
                  "constant or warmup_cosine.")
flags.DEFINE_integer("warmup_epochs", None, "warmup_cosine: linear warm-up epochs.")
flags.DEFINE_float("warmup_lr", None, "warmup_cosine: learning rate at step 0.")
flags.DEFINE_float("final_lr", None, "warmup_cosine: learning rate at the end of training.")
flags.DEFINE_enum("lr_scaling", None, list(config_lib.LR_SCALINGS),
                  "linear: learning rates times batch_size / 256; none.")
flags.DEFINE_float("weight_decay", None, "Weight decay.")
flags.DEFINE_float("momentum", None, "Momentum of sgd / lars / larc.")
flags.DEFINE_multi_string("set", None, "FIELD=VALUE: any Config field, typed as the "
                          "field (e.g. --set predictor_eps=0.05 --set crop_scale=0.2,1.0; "
                          "none for an optional field), checked and saved like the flags.")

#: Flags copied onto Config fields when given (same name, or FIELD_OF_FLAG's).
OVERRIDES = ("epochs_pretraining", "epochs_finetuning", "probe_learning_rate",
             "probe_weight_decay", "probe_batch_size", "probe_protocol", "symmetry",
             "eigenspace", "loss", "dataset",
             "data_dir", "image_size", "batch_size", "max_train_examples",
             "max_test_examples", "validation_examples", "backbone", "width",
             "mixed_precision", "jit_compile", "augment_on",
             "knn_every", "eigenspace_every", "seed", "optimizer", "base_lr", "lr_schedule",
             "warmup_epochs", "warmup_lr", "final_lr", "lr_scaling", "weight_decay",
             "momentum", "strategy")
#: Flags whose Config field has another name.
FIELD_OF_FLAG = {"base_lr": "learning_rate"}


#: --help groups: what the flags configure.
HELP_GROUPS = (
    ("Run", ("model", "config", "name", "results_dir", "resume", "overwrite", "verbose",
             "seed")),
    ("Data", ("dataset", "data_dir", "image_size", "max_train_examples", "max_test_examples",
              "validation_examples", "augment_on")),
    ("Model", ("backbone", "width", "loss", "symmetry", "one_layer_predictor")),
    ("Pre-training", ("epochs_pretraining", "batch_size", "optimizer", "base_lr", "momentum",
                      "weight_decay", "lr_schedule", "warmup_epochs", "warmup_lr", "final_lr",
                      "lr_scaling")),
    ("Linear probe", ("epochs_finetuning", "probe_protocol", "probe_learning_rate",
                      "probe_weight_decay", "probe_batch_size")),
    ("Monitors", ("knn_every", "eigenspace", "eigenspace_every")),
    ("Hardware", ("strategy", "mixed_precision", "jit_compile")),
    ("Any field", ("set",)),
)
#: Datasets known by name (any other tfds name is passed to tensorflow-datasets).
KNOWN_DATASETS = ("cifar10", "cifar100", "stl10", "tf_flowers", "synthetic", "folder")


def help_text():
    summary = (__doc__ + "\nFactories (--config): " + ", ".join(sorted(config_lib.FACTORIES))
               + "\nMethods (--model): " + ", ".join(sorted(config_lib.MODELS)) + "\n")
    return console.help_text("train.py", summary, FLAGS, HELP_GROUPS,
                             factory_default=set(OVERRIDES))


def factory_name(values):
    """The factory a flag dict picks (``--config``, ``--model``'s, or byol)."""
    if values.get("model") and values.get("config"):
        raise ValueError(f"--model and --config exclude each other. Received: "
                         f"--model={values['model']} --config={values['config']}")
    name = values.get("config")
    if name:
        key = name[4:] if name.startswith("get_") else name
        if config_lib.MODELS.get(key, key) not in config_lib.FACTORIES:
            hint = console.did_you_mean(name, config_lib.FACTORIES)
            raise ValueError(f"Unknown --config {name!r}.{hint} Valid: "
                             f"{sorted(config_lib.FACTORIES)}. Received: --config={name}")
        return name
    name = values.get("model") or "byol"
    if name not in config_lib.MODELS:
        raise ValueError(f"Unknown --model {name!r}. Valid: {sorted(config_lib.MODELS)}")
    return name


def _check_dataset(dataset):
    if dataset and dataset not in KNOWN_DATASETS:
        hint = console.did_you_mean(dataset, KNOWN_DATASETS)
        if hint:  # "cifar-10": a typo of a known name, not another tfds dataset
            raise ValueError(f"Unknown --dataset {dataset!r}.{hint} Received: "
                             f"--dataset={dataset}")


def set_changes(values):
    """The fields of the ``--set FIELD=VALUE`` assignments in ``values["set"]``, each typed
    as its field (:func:`config.parse_assignment`); a field named by a flag too, or twice,
    is refused."""
    flagged = {FIELD_OF_FLAG.get(k, k): k for k in OVERRIDES if values.get(k) is not None}
    changes = {}
    for text in values.get("set") or ():
        try:
            field, value = config_lib.parse_assignment(text)
        except ValueError as error:
            raise ValueError(f"--set: {error}") from None
        if field in changes or field in flagged:
            other = f"--{flagged[field]}" if field in flagged else "another --set"
            raise ValueError(f"--set {field}= gives a field that {other} gives too. "
                             f"Received: --set={text}")
        changes[field] = value
    return changes


def make_config(values):
    """The effective Config from a dict of flag values (``None`` = not given)."""
    name = factory_name(values)
    assigned = set_changes(values)
    _check_dataset(assigned.get("dataset", values.get("dataset")))
    changes = {FIELD_OF_FLAG.get(k, k): values[k] for k in OVERRIDES
               if values.get(k) is not None}
    changes.update(assigned)
    if values.get("one_layer_predictor"):
        factory = config_lib.get_config(name)
        if factory.predictor != "mlp":
            raise ValueError("--one_layer_predictor applies to BYOL and SimSiam configs (MLP "
                             f"predictor) only. Received: config {factory.name!r} with "
                             f"predictor {factory.predictor!r}")
        changes["predictor"] = "linear"
    # The one resolver (factory, then the dataset's preset, then the flags), as the API's.
    return config_lib.get_config(name, **changes)


def resume_config(run_dir, values):
    """``--resume``: the run's saved config.json, with the flags given (``values``, None
    = not given) checked against it by :func:`experiments.run_folder.resumed_config`: a
    flag that disagrees is refused, naming it, except the probe's options of a run that
    is not complete."""
    given = []  # (flag as typed, field, value, what the saved value is called)
    if values.get("model") or values.get("config"):
        flag = "--config" if values.get("config") else "--model"
        given.append((f"{flag}={values.get('config') or values['model']}", "name",
                      config_lib.get_config(factory_name(values)).name, "factory "))
    given += [(f"--{flag}={values[flag]}", FIELD_OF_FLAG.get(flag, flag), values[flag], "")
              for flag in OVERRIDES if values.get(flag) is not None]
    given += [(f"--set {field}={value}", field, value, "")
              for field, value in set_changes(values).items()]
    if values.get("one_layer_predictor"):
        given.append(("--one_layer_predictor", "predictor", "linear", "predictor "))
    _, config, refused = run_folder.resumed_config(
        run_dir, [(field, value) for _, field, value, _ in given])
    refused = [(field, new) for field, _, new in refused]
    disagree = [f"{flag} (saved {label}{getattr(config, field)!r})"
                for flag, field, value, label in given if (field, value) in refused]
    if disagree:
        raise ValueError(f"--resume continues {run_dir!r} as saved in its config.json; "
                         f"these flags disagree with it: {', '.join(disagree)}. Drop them "
                         "(or start a new run).")
    return config


def _interrupted(run_dir, name, results_dir):
    """The one line of a Ctrl-C: the last checkpoint and the command that resumes."""
    state = os.path.join(run_dir, "checkpoint", "state.json")
    try:
        with open(state) as f:
            kept = f"the checkpoint of epoch {json.load(f)['epoch']} ({state}) is kept"
    except (OSError, ValueError, KeyError):
        kept = "no checkpoint was written yet"
    command = f"python train.py --name {name} --resume"
    if results_dir != "results":
        command += f" --results_dir {results_dir}"
    return f"train.py: interrupted; {kept}; continue with: {command}"


def _interrupt_callbacks(check):
    """Ctrl-C raises ``KeyboardInterrupt`` as usual and also sets an event that ``check``
    (a callback) turns into one at the next batch end, so that an interrupt CPython lost in
    a finaliser still stops the run. Nothing when SIGINT is ignored (e.g. ``nohup``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return ()
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    return (check(interrupted),)


def main(argv):
    del argv
    values = {name: FLAGS[name].value for name in
              (*OVERRIDES, "model", "config", "one_layer_predictor", "set")}
    try:
        if not FLAGS.name:
            raise ValueError("--name is required (results go to RESULTS_DIR/NAME).")
        run_dir = os.path.join(FLAGS.results_dir, FLAGS.name)
        if FLAGS.resume and not FLAGS.overwrite:
            config = resume_config(run_dir, values)
        else:
            config = make_config(values)
        # Imports Keras and its backend (TensorFlow by default): after the flag checks.
        from experiments.callbacks import InterruptCheck
        from experiments.training import probe_summary, train
        metrics = train(config, FLAGS.name, results_dir=FLAGS.results_dir,
                        resume=FLAGS.resume, overwrite=FLAGS.overwrite, verbose=FLAGS.verbose,
                        callbacks=_interrupt_callbacks(InterruptCheck))
    except KeyboardInterrupt:
        print("", flush=True)
        print(_interrupted(run_dir, FLAGS.name, FLAGS.results_dir), file=sys.stderr)
        sys.exit(130)
    except ValueError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # unwritable / full results folder: one line, nothing lost
        from experiments.safe_io import WriteError
        text = str(error) if isinstance(error, WriteError) else (
            f"{error.filename}: {error.strerror}" if error.filename else str(error))
        print(f"train.py: error: {text}", file=sys.stderr)
        sys.exit(4)
    except Exception as error:  # e.g. NonFiniteLossError: one line, non-zero exit
        from experiments.callbacks import NonFiniteLossError
        if isinstance(error, NonFiniteLossError):
            print(f"train.py: error: {error}", file=sys.stderr)
            sys.exit(3)
        raise
    if metrics.get("already_complete"):
        print(f"train.py: {run_dir} is already complete; --resume changed nothing.")
    print(probe_summary(metrics))
    print(f"top1={metrics['top1']:.6f} top5={metrics['top5']:.6f}")
    print(f"results in {run_dir}")


def cli(argv=None):
    """``python train.py`` and the ``nc-ssl-train`` console script."""
    argv = console.parse_flags("train.py", FLAGS, sys.argv if argv is None else argv,
                               help_text)
    if FLAGS.verbose < 2:
        console.quiet_framework_logs()
    main(argv)


if __name__ == "__main__":
    cli()
