"""The pieces of `gr_core.trainer.Trainer` that are decisions of their own: which evaluation a run
reports and when it stops (`selection`), and how it saves and resumes (`checkpoints`)."""
