"""TOPReward prefix scoring: prompt, reference scorer, cached scorer."""
