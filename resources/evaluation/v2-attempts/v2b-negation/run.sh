#!/bin/bash
# Issue 16, session 9: does the implied-negatives fix (d75c508) move the negation check?
# A 500-step fine-tune of v2 (step 2,250) with AUGMENT_VERSION 2 and implied absent tokens, then the paraphrase + negation protocol.
set -x
cd /work/main
CS=.venv/bin/cxr-studio
date
OMP_NUM_THREADS=1 $CS train diffusion --data runs/all.jsonl --vae runs/v1-ckpt --init-from runs/v2/best --out runs/v2b \
  --record-tokens --caption-augment 0.8 --min-snr-gamma 5 --latent-cache runs/latents --steps 500 --batch-size 32 --lr 5e-5 \
  --warmup-steps 20 --checkpoint-every 250 --val-every 250 --ema-decay 0.99 --quiet
date
$CS export-onnx --checkpoint runs/v2b/best --out runs/packs/v2b --attention-maps --text-int8 --model-id cxr-studio-v2b-cpu --card runs/v2-card.json
date
OMP_NUM_THREADS=1 $CS evaluate --model runs/packs/v2b --data runs/pediatric.jsonl --out runs/v2b-eval/paraphrases --classifier resources/evaluation/default/classifier --skip vae,statistics,frechet,alignment,memorisation,utility,diversity,steps --prompt-age-band child --prompt-set-images 2 --threads 1 --quiet
date
