"""Recipes of several runs: a named pipeline (kit.config.pipelines) run stage by stage, each
stage an ordinary CV run or blend in cv/, resumable at any stage (pipeline)."""
