"""SeqIO task and mixture registrations, vocabularies, metric fns."""
