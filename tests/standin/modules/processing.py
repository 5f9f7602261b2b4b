"""``create_binary_mask`` of A1111 v1.10.1's ``modules/processing.py`` (verbatim), and ``create_infotext`` (reduced)."""

from __future__ import annotations


def create_binary_mask(image, round=True):
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        if round:
            image = image.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
        else:
            image = image.split()[-1].convert("L")
    else:
        image = image.convert("L")
    return image


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0, use_main_prompt=False, index=None, all_negative_prompts=None):
    """The host's signature; the text keeps what tests read: the prompt line, the seed, and
    ``extra_generation_params`` (where scripts put their infotext)."""
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    prompt = p.prompt if use_main_prompt else all_prompts[index]
    fields = {"Steps": p.steps, "Sampler": p.sampler_name, "Seed": all_seeds[index], "Size": f"{p.width}x{p.height}", "Denoising strength": p.denoising_strength, **p.extra_generation_params}
    return prompt + "\n" + ", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None)
