"""Load one published export every way a user would, in a process that never imports adni_timm.

usage: python loading_paths_probe.py EXPORT_DIR HUB_REPO_ID OUT.json IMAGE... (HF_HUB_OFFLINE=1 and
HF_HUB_CACHE pointing at a cache that holds HUB_REPO_ID.) Writes {path name: [P(AD) per image]} plus
the labels transformers reports, and fails if adni_timm was imported.
"""

import json
import sys

import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

export_dir, repo_id, out_file, *images = sys.argv[1:]
ad = json.load(open(f'{export_dir}/config.json'))['label_names'].index('AD')
out = {}


def timm_p(name, mode, **kwargs):
    model = timm.create_model(name, pretrained=True, **kwargs).eval()
    transform = create_transform(**resolve_data_config(model=model))  # timm's own, unchanged
    with torch.no_grad():
        return [
            model(transform(Image.open(f).convert(mode)).unsqueeze(0)).softmax(-1)[0, ad].item()
            for f in images
        ]


for source in (f'local-dir:{export_dir}', f'hf-hub:{repo_id}'):
    out[f'timm {source} RGB'] = timm_p(source, 'RGB')
    out[f'timm {source} in_chans=1 L'] = timm_p(source, 'L', in_chans=1)

for source in (export_dir, repo_id):
    classify = pipeline('image-classification', model=source, device='cpu')
    for kind, load in (
        ('path', lambda f: f),
        ('PIL L', lambda f: Image.open(f).convert('L')),
        ('PIL RGB', lambda f: Image.open(f).convert('RGB')),
    ):
        results = [classify(load(f), top_k=None) for f in images]
        out[f'pipeline {source} {kind}'] = [
            next(r['score'] for r in rs if r['label'] == 'AD') for rs in results
        ]
        out[f'pipeline labels {source} {kind}'] = sorted({r['label'] for rs in results for r in rs})
    # the model card's recipe for the stored operating point: raw logits from the pipeline
    out[f'pipeline logits {source}'] = [
        {r['label']: r['score'] for r in classify(f, function_to_apply='none', top_k=None)}
        for f in images
    ]
    processor = AutoImageProcessor.from_pretrained(source)
    model = AutoModelForImageClassification.from_pretrained(source).eval()
    with torch.no_grad():
        out[f'AutoModel {source}'] = [
            model(**processor(Image.open(f).convert('RGB'), return_tensors='pt'))
            .logits.softmax(-1)[0, model.config.label2id['AD']]
            .item()
            for f in images
        ]
    out[f'AutoModel labels {source}'] = [
        model.config.id2label[i] for i in range(len(model.config.id2label))
    ]

assert 'adni_timm' not in sys.modules, 'the loading process imported adni_timm'
json.dump(out, open(out_file, 'w'), indent=1)
