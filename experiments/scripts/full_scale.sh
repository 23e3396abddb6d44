#!/usr/bin/env bash
# Full-scale recipes of the published results (ResNet-18, 100 epochs; needs a GPU).
# Usage: bash experiments/scripts/full_scale.sh [cifar10|stl10] [extra train.py flags...]
# Each line is one published row; docs/reproduction.md (section 1) has the numbers.
set -euo pipefail
dataset="${1:-cifar10}"; shift || true
cd "$(dirname "$0")/../.."
run() { python train.py --dataset "$dataset" --epochs_pretraining 100 "$@"; }
# Paper Table 8 (DirectPred, DirectPred freq=5, SGD linear-predictor baseline):
run --config direct_pred          --name "${dataset}_direct_pred" "$@"
run --config direct_pred_freq_5   --name "${dataset}_direct_pred_freq_5" "$@"
run --config byol_baseline        --name "${dataset}_sgd_baseline" "$@"
# Original TF2 reproduction's table (BYOL, SimSiam):
run --config byol                 --name "${dataset}_byol" "$@"
run --config simsiam              --name "${dataset}_simsiam" "$@"
# DirectPred / DirectCopy with and without EMA:
run --config simsiam_pred         --name "${dataset}_direct_pred_no_ema" "$@"
run --config direct_copy          --name "${dataset}_direct_copy" "$@"
run --config direct_copy_no_ema   --name "${dataset}_direct_copy_no_ema" "$@"
# Paper Table 3, one-layer linear predictor with EMA (regular / symmetric):
run --config eigenspace_experiment               --name "${dataset}_linear_ema" "$@"
run --config eigenspace_experiment_with_symmetry --name "${dataset}_linear_symmetric_ema" "$@"
# The paper's collapse case (Table 3: symmetric linear Wp, no EMA) and its regular twin:
run --config simsiam_baseline_symmetric --name "${dataset}_linear_symmetric_no_ema" "$@"
run --config simsiam_baseline           --name "${dataset}_linear_no_ema" "$@"
# The wider family, solo-learn's CIFAR recipes (1000 epochs, their own optimizer/schedule):
family() { python train.py --dataset "$dataset" "$@"; }
family --config simclr        --name "${dataset}_simclr" "$@"
family --config supcon        --name "${dataset}_supcon" "$@"
family --config swav          --name "${dataset}_swav" "$@"
family --config moco          --name "${dataset}_moco" "$@"
family --config barlow_twins  --name "${dataset}_barlow_twins" "$@"
# The DirectPred family's successors, fmi-basel/implicit-var-reg's CIFAR recipes (1000 epochs;
# docs/successors.md). No published number is cited: their paper's tables were not read.
family --config direct_set        --name "${dataset}_direct_set" "$@"
family --config direct_set_no_ema --name "${dataset}_direct_set_no_ema" "$@"
family --config direct_set_copy   --name "${dataset}_direct_set_copy" "$@"
family --config isoloss           --name "${dataset}_isoloss" "$@"
family --config isoloss_no_ema    --name "${dataset}_isoloss_no_ema" "$@"
# Richemond et al. 2023's closed-form predictors on BYOL (100 epochs; their published numbers
# are ImageNet ResNet-50, docs/successors.md):
run --config closed_form_ns       --name "${dataset}_closed_form_ns" "$@"
run --config closed_form_ns2      --name "${dataset}_closed_form_ns2" "$@"
run --config closed_form_stiefel  --name "${dataset}_closed_form_stiefel" "$@"
run --config closed_form_visser   --name "${dataset}_closed_form_visser" "$@"
