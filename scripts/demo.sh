#!/usr/bin/env bash
# The main job on what ships with the repo: the three entry scripts with the shipped weights, scored.
# Problem 1: 1000 faces of method B + face score (FID needs ~3 min of CPU: python -m common.evaluate fid
# out/p1_faces hw2_data/face/val). Problem 2: 1000 digits with the diffusion model at its shipped
# default, 8 DPM-Solver++ steps, w = 4 (~1.5 min on a 2-core CPU) + course-classifier accuracy when
# ../shared/evaluators/Classifier.pth is there. Problem 3: USPS val predictions + accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
mkdir -p out
bash hw2_3.sh hw2_data/digits/usps/data out/p3_usps_pred.csv usps
$py -m common.evaluate uda out/p3_usps_pred.csv hw2_data/digits/usps/val.csv
bash hw2_1.sh out/p1_faces
$py -m common.evaluate face out/p1_faces
bash hw2_2.sh out/p2_digits
$py -m common.evaluate digits out/p2_digits || echo "(no course classifier here: accuracy skipped)"
