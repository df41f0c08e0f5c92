"""The long-running workers: one shared loop for every stage (`workers.runner`)."""
