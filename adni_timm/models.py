"""ConvNeXt family for ADNI AD vs NC, registered as timm entrypoints.

Each ``adni_convnext_*`` model is timm's own ``ConvNeXt`` built by
``build_model_with_cfg``; only the pretrained config differs from stock timm:
1 grayscale channel, 2 classes (index 0 = NC, index 1 = AD), mean/std 0.5, and
scratch initialisation (never ImageNet weights). The state dict is exactly that
of the matching stock model (``STOCK_ARCHITECTURES``), so exported weights load
in plain timm without this package.

No weights are published (``PUBLISHED_WEIGHTS`` is empty), so the cfgs name no
weight source, ``timm.list_pretrained('adni*')`` is empty, and ``pretrained=True``
needs one: ``pretrained_cfg_overlay=dict(hf_hub_id='ORG/NAME')`` or
``timm.create_model('local-dir:DIR', pretrained=True)`` (docs/HUB.md).
"""

from __future__ import annotations

from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)
from timm.models.convnext import ConvNeXt, checkpoint_filter_fn

__all__ = [
    'LABEL_NAMES',
    'MEAN',
    'STD',
    'INTERPOLATION',
    'CROP_PCT',
    'LICENSE',
    'PRETRAINED_TAG',
    'PUBLISHED_WEIGHTS',
    'STOCK_ARCHITECTURES',
    'stock_architecture',
]

LABEL_NAMES = ('NC', 'AD')  # index 1 = AD, the positive class; never alphabetical
MEAN = (0.5,)
STD = (0.5,)
INTERPOLATION = 'bilinear'
# 256x240 slices are resized (short side) to img_size / crop_pct, then centre-cropped.
# 1.0 keeps the whole brain: the slices are already tightly framed.
CROP_PCT = 1.0
PRETRAINED_TAG = 'adni_ad_nc'
# the code's licence, and that of weights trained on SYNTHETIC data; weights trained on real data
# say 'other' (their data's terms: export.licence)
LICENSE = 'apache-2.0'

# adni name -> stock timm name with the same architecture and state-dict keys
STOCK_ARCHITECTURES = {
    'adni_convnext_atto': 'convnext_atto',
    'adni_convnext_nano': 'convnext_nano',
    'adni_convnext_tiny': 'convnext_tiny',
    'adni_convnext_small': 'convnext_small',
    'adni_convnext_base': 'convnext_base',
}


# adni name -> Hub repo id of reference weights that really exist. Empty: nothing is published, and
# a cfg that names a repo which does not exist makes timm advertise (list_pretrained) weights that
# fail to load. Publishing reference weights adds their repo id here in the same commit.
PUBLISHED_WEIGHTS: dict[str, str] = {}

# the keys by which a pretrained cfg names its weights (timm's PretrainedCfg.has_weights, plus an
# in-memory state dict)
_WEIGHT_SOURCE_KEYS = ('hf_hub_id', 'url', 'file', 'state_dict')


def stock_architecture(model_name: str) -> str:
    """The stock timm architecture a model name builds (identity for non-adni names)."""
    return STOCK_ARCHITECTURES.get(model_name.split('.')[0], model_name.split('.')[0])


def _cfg(hf_hub_id: str = '', **kwargs):
    return {
        # no key at all without published weights: timm lists a cfg with a source as pretrained
        **({'hf_hub_id': hf_hub_id} if hf_hub_id else {}),
        'num_classes': 2,
        'input_size': (1, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': CROP_PCT,
        'interpolation': INTERPOLATION,
        'mean': MEAN,
        'std': STD,
        'first_conv': 'stem.0',
        'classifier': 'head.fc',
        'label_names': LABEL_NAMES,
        'license': LICENSE,
        'description': (
            'ConvNeXt initialised from scratch (no ImageNet weights) and trained to tell Normal '
            "Control (NC) from Alzheimer's disease (AD) on 2D axial MRI slices of the ADNI AD_NC "
            'set. Research use only; not a medical device.'
        ),
        'origin_url': 'https://github.com/adni-timm/adni-timm',
        'paper_ids': 'arXiv:2201.03545',
        'paper_name': 'A ConvNet for the 2020s',
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        f'{name}.{PRETRAINED_TAG}': _cfg(hf_hub_id=PUBLISHED_WEIGHTS.get(name, ''))
        for name in STOCK_ARCHITECTURES
    }
)


def _require_weight_source(variant: str, kwargs: dict) -> None:
    """Refuse ``pretrained=True`` before building anything when no cfg names weights.

    timm itself would build the model first and then fail with a message that names no way out;
    this says at once how to give a source.
    """
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    if not any(getattr(cfg, key, None) for key in _WEIGHT_SOURCE_KEYS):
        raise RuntimeError(
            f'{variant}: no pretrained weights are published for it (the adni models train from '
            f"scratch); load your own with pretrained_cfg_overlay=dict(hf_hub_id='ORG/NAME') or "
            f"timm.create_model('local-dir:/path/to/export', pretrained=True) (docs/HUB.md), "
            f'or use pretrained=False.'
        )


def _create_adni_convnext(variant: str, pretrained: bool = False, **kwargs) -> ConvNeXt:
    kwargs.setdefault('in_chans', 1)
    kwargs.setdefault('num_classes', 2)
    if pretrained:
        _require_weight_source(variant, kwargs)
        # published weights (adni_timm.export.format) are 3-channel:
        # say so, and timm sums them for in_chans=1
        overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
        overlay['input_size'] = (3, *overlay.get('input_size', (1, 224, 224))[1:])
        kwargs['pretrained_cfg_overlay'] = overlay
    try:
        model = build_model_with_cfg(
            ConvNeXt,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001 - only when pretrained weights could not be fetched
        if not pretrained or isinstance(e, (TypeError, ValueError, KeyError)):
            raise
        raise RuntimeError(
            f'{variant}: pretrained weights could not be loaded ({type(e).__name__}: {e}); check '
            f"pretrained_cfg_overlay=dict(hf_hub_id='ORG/NAME') or load "
            f"'local-dir:/path/to/export' (see docs/HUB.md, also for offline use)."
        ) from e
    channels = kwargs['in_chans']
    # describe the model built, not the weights' source
    if model.pretrained_cfg['input_size'][0] != channels:
        cfg = dict(
            model.pretrained_cfg, input_size=(channels, *model.pretrained_cfg['input_size'][1:])
        )
        model.pretrained_cfg = model.default_cfg = cfg
    return model


@register_model
def adni_convnext_atto(pretrained=False, **kwargs) -> ConvNeXt:
    model_args = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True)
    return _create_adni_convnext(
        'adni_convnext_atto', pretrained=pretrained, **dict(model_args, **kwargs)
    )


@register_model
def adni_convnext_nano(pretrained=False, **kwargs) -> ConvNeXt:
    model_args = dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), conv_mlp=True)
    return _create_adni_convnext(
        'adni_convnext_nano', pretrained=pretrained, **dict(model_args, **kwargs)
    )


@register_model
def adni_convnext_tiny(pretrained=False, **kwargs) -> ConvNeXt:
    model_args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    return _create_adni_convnext(
        'adni_convnext_tiny', pretrained=pretrained, **dict(model_args, **kwargs)
    )


@register_model
def adni_convnext_small(pretrained=False, **kwargs) -> ConvNeXt:
    model_args = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
    return _create_adni_convnext(
        'adni_convnext_small', pretrained=pretrained, **dict(model_args, **kwargs)
    )


@register_model
def adni_convnext_base(pretrained=False, **kwargs) -> ConvNeXt:
    model_args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create_adni_convnext(
        'adni_convnext_base', pretrained=pretrained, **dict(model_args, **kwargs)
    )
