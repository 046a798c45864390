#!/usr/bin/env bash
# A LoRA adapter that teaches the bundled digits model a new style: scikit-learn's 8x8 digits, upscaled blocky to the
# model's 32x32, with the same English and Chinese captions. A quarter of the rows are captioning: without them the
# adapted model cannot read its own digits (a quarter of real ones captioned right), and the default pipeline's
# self-reranking picks at random. Adapter files only -> models/cogview-digits-lora-sklearn.
# Usage: bash scripts/train_digits_lora.sh [WORK_DIR]     (intermediate files go to WORK_DIR, default data/)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-data}
base=models/cogview-digits
start=$(date +%s)

python scripts/prepare_digits.py --source sklearn --image_size 32 --test_per_class 30 --output_dir "$work/sklearn-digits"
python scripts/tokenize_dataset.py --images_dir "$work/sklearn-digits" --vqvae "$base" --tokenizer "$base" \
    --output_dir "$work/sklearn-digits-tokenized"
rm -rf "$work/sklearn-lora-run"
python scripts/train.py --model "$base" --base_model_id cogview-hf/cogview-digits --lora_r 8 --lora_alpha 16 \
    --dataset "$work/sklearn-digits-tokenized/dataset" --split train --output_dir "$work/sklearn-lora-run" \
    --tasks text-to-image,text-to-image,text-to-image,image-to-text --text_dropout 0.2 --max_steps 2000 --per_device_train_batch_size 32 --learning_rate 1e-3 \
    --save_steps 1000 --logging_steps 100 --model_name cogview-digits-lora-sklearn --example_prompt "a handwritten digit 7" \
    --description "A LoRA adapter for cogview-digits: its digits drawn in the style of scikit-learn's 8x8 digits (blocky, 17 gray levels, upscaled to 32x32 px), trained on 1,497 of them with the same English and Chinese captions (\"a handwritten digit 7\", \"手写数字7\"), three rows in four drawing and one captioning, so that self-reranking reads its digits."

out=models/cogview-digits-lora-sklearn
mkdir -p "$out"
rm -rf "${out:?}"/*
cp "$work"/sklearn-lora-run/{adapter_config.json,adapter_model.safetensors,README.md,train_metrics.json} "$out"/
echo "trained $out in $(( $(date +%s) - start )) s"
