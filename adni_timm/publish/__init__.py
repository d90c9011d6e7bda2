"""Publishing an export: the Hub upload and the model card.

``hub``         assemble the upload folder, dry run or ``HfApi`` upload
``card``        the model card's facts (its prose is a template)
``complexity``  parameters and FLOPs for the card
"""
