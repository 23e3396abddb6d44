"""Pre-train a Siamese SSL model, then fit the linear probe.

    python train.py --model directpred --eigenspace --name run
    python train.py --config direct_pred_freq_5 --name run5 --epochs_pretraining 10

Flags override the chosen factory's values (flags left unset keep them); the
effective config is saved to RESULTS_DIR/NAME/config.json. See README.md.
Under ``KERAS_BACKEND=jax`` the same flags train on one device from in-memory
arrays (``--dataset synthetic|folder``; docs/backends.md).
"""

import sys

from absl import app, flags, logging

import config as config_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, sorted(config_lib.MODELS),
                  "Method; picks its factory (byol, simsiam, directpred, directcopy, simclr, "
                  "supcon, swav, moco, barlow_twins). Default byol. Exclusive with --config.")
flags.DEFINE_string("config", None, "Any factory name of config.py, e.g. direct_pred_freq_5. "
                    "Exclusive with --model.")
flags.DEFINE_string("name", None, "Run name: results go to RESULTS_DIR/NAME.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_boolean("resume", False, "Continue RESULTS_DIR/NAME from its last completed epoch.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing RESULTS_DIR/NAME.")
flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 bars, 2 one line/epoch.")
# Overrides of Config fields; None keeps the factory's value.
flags.DEFINE_integer("epochs_pretraining", None, "Pre-training epochs (factory default 101).")
flags.DEFINE_integer("epochs_finetuning", None, "Linear-probe epochs (factory default 50).")
flags.DEFINE_float("probe_learning_rate", None, "Probe Adam learning rate of the official "
                   "mini-batch loop (factory default 3e-4).")
flags.DEFINE_float("probe_weight_decay", None, "Probe coupled L2 weight decay (default 1e-3).")
flags.DEFINE_integer("probe_batch_size", None, "Probe batch of the official loop (default 128).")
flags.DEFINE_enum("probe_protocol", None, list(config_lib.PROBE_PROTOCOLS),
                  "official: luckmatters' mini-batch Adam loop; full_batch: the same objective "
                  "by full-batch Adam to convergence; auto (default): official where it has "
                  "the published number of steps, else full_batch.")
flags.DEFINE_boolean("symmetry", None, "Symmetry regularisation of the predictor.")
flags.DEFINE_boolean("eigenspace", None, "Track eigenspace alignment of Wp and F.")
flags.DEFINE_enum("loss", None, list(config_lib.LOSSES),
                  "Non-contrastive loss: cosine (default; BYOL / SimSiam) or l2, the "
                  "paper's un-normalised ||Wp W x1 - sg(Wa x2)||^2 (Sec. 2, Eq. 1).")
flags.DEFINE_boolean("one_layer_predictor", None,
                     "Linear predictor trained by SGD (BYOL and SimSiam configs only).")
flags.DEFINE_string("dataset", None, "cifar10 | stl10 | tf_flowers | any tfds name | "
                    "synthetic | folder (with --data_dir ROOT/{train,test}/<class>/).")
flags.DEFINE_string("data_dir", None, "Image-folder root (--dataset folder) or tfds data dir.")
flags.DEFINE_integer("image_size", None, "Image size (default: the dataset's, e.g. 32 / 96).")
flags.DEFINE_integer("batch_size", None, "Pre-training batch size (default 128).")
flags.DEFINE_integer("max_train_examples", None, "Deterministic train subset size.")
flags.DEFINE_integer("max_test_examples", None, "Deterministic test subset size.")
flags.DEFINE_integer("validation_examples", None,
                     "Hold out N train examples as the probe / kNN evaluation split (for "
                     "tuning; the test split is then not read). Default 0: test split.")
flags.DEFINE_enum("backbone", None, list(config_lib.BACKBONES),
                 "Encoder (default resnet18; models/backbones.py).")
flags.DEFINE_float("width", None, "Encoder channel multiplier (1 = published ResNet-18).")
flags.DEFINE_enum("mixed_precision", None, list(config_lib.MIXED_PRECISION),
                  "Keras mixed-precision policy (loss and F stay float32).")
flags.DEFINE_boolean("jit_compile", None, "XLA-compile the train step.")
flags.DEFINE_enum("strategy", None, list(config_lib.STRATEGIES),
                  "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                  "multiworker (hosts from TF_CONFIG) or tpu. --batch_size is global.")
flags.DEFINE_enum("augment_on", None, list(config_lib.AUGMENT_ON),
                  "Augment in the tf.data pipeline (host) or inside the train step (device).")
flags.DEFINE_integer("knn_every", None, "kNN monitor every N epochs (0 = off; default 10).")
flags.DEFINE_integer("eigenspace_every", None, "Eigenspace snapshot every N epochs (default 5).")
flags.DEFINE_integer("seed", None, "Random seed (default 0).")
# Optimisation (models/optimizers.py); the factories use the paper's SGD recipe.
flags.DEFINE_enum("optimizer", None, list(config_lib.OPTIMIZERS),
                  "Pre-training optimizer (default sgd with coupled L2 decay).")
flags.DEFINE_float("base_lr", None, "Base learning rate, before --lr_scaling (default 0.03).")
flags.DEFINE_enum("lr_schedule", None, list(config_lib.LR_SCHEDULES),
                  "constant (default) or warmup_cosine.")
flags.DEFINE_integer("warmup_epochs", None, "warmup_cosine: linear warm-up epochs.")
flags.DEFINE_float("warmup_lr", None, "warmup_cosine: learning rate at step 0.")
flags.DEFINE_float("final_lr", None, "warmup_cosine: learning rate at the end of training.")
flags.DEFINE_enum("lr_scaling", None, list(config_lib.LR_SCALINGS),
                  "linear: learning rates times batch_size / 256 (default none).")
flags.DEFINE_float("weight_decay", None, "Weight decay (default 4e-4).")
flags.DEFINE_float("momentum", None, "Momentum of sgd / lars / larc (default 0.9).")

#: Flags copied onto Config fields when given (same name, or FIELD_OF_FLAG's).
OVERRIDES = ("epochs_pretraining", "epochs_finetuning", "probe_learning_rate",
             "probe_weight_decay", "probe_batch_size", "probe_protocol", "symmetry", "eigenspace", "loss",
             "dataset",
             "data_dir", "image_size", "batch_size", "max_train_examples",
             "max_test_examples", "validation_examples", "backbone", "width", "mixed_precision", "jit_compile",
             "augment_on",
             "knn_every", "eigenspace_every", "seed", "optimizer", "base_lr", "lr_schedule",
             "warmup_epochs", "warmup_lr", "final_lr", "lr_scaling", "weight_decay",
             "momentum", "strategy")
#: Flags whose Config field has another name.
FIELD_OF_FLAG = {"base_lr": "learning_rate"}


def make_config(values):
    """The effective Config from a dict of flag values (``None`` = not given)."""
    if values.get("model") and values.get("config"):
        raise ValueError(f"--model and --config exclude each other. Received: "
                         f"--model={values['model']} --config={values['config']}")
    name = values.get("config")
    if not name:
        name = values.get("model") or "byol"
        if name not in config_lib.MODELS:
            raise ValueError(f"Unknown --model {name!r}. Valid: {sorted(config_lib.MODELS)}")
    changes = {FIELD_OF_FLAG.get(k, k): values[k] for k in OVERRIDES
               if values.get(k) is not None}
    if values.get("one_layer_predictor"):
        factory = config_lib.get_config(name)
        if factory.predictor != "mlp":
            raise ValueError("--one_layer_predictor applies to BYOL and SimSiam configs (MLP "
                             f"predictor) only. Received: config {factory.name!r} with "
                             f"predictor {factory.predictor!r}")
        changes["predictor"] = "linear"
    # The one resolver (factory, then the dataset's preset, then the flags), as the API's.
    return config_lib.get_config(name, **changes)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if not FLAGS.name:
            raise ValueError("--name is required (results go to RESULTS_DIR/NAME).")
        config = make_config({name: FLAGS[name].value for name in
                              (*OVERRIDES, "model", "config", "one_layer_predictor")})
        # Imports Keras and its backend (TensorFlow by default): after the flag checks.
        from experiments.training import train
        metrics = train(config, FLAGS.name, results_dir=FLAGS.results_dir,
                        resume=FLAGS.resume, overwrite=FLAGS.overwrite, verbose=FLAGS.verbose)
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
        print(f"train.py: {FLAGS.results_dir}/{FLAGS.name} is already complete; "
              "--resume changed nothing.")
    from experiments.training import probe_summary
    print(probe_summary(metrics))
    print(f"top1={metrics['top1']:.6f} top5={metrics['top5']:.6f}")
    logging.info("results in %s/%s", FLAGS.results_dir, FLAGS.name)


if __name__ == "__main__":
    app.run(main)
