"""medprobe generation side: prompt catalogs, generators, the image store and probe runs."""

from .catalog import Catalog, expand, load_catalog, match_prompt, match_prompts, prompt_id

__all__ = ["Catalog", "expand", "load_catalog", "match_prompt", "match_prompts", "prompt_id"]
