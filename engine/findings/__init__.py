"""Reading clinical text: ``reader`` turns a report or prompt into findings, each present / absent /
uncertain (the vocabulary and the negation rules); ``record`` parses a prompt into one structured
record (findings with side and lobe, age, sex, view); ``understood`` compares that record with what a
model's card says it can draw. Pure standard library."""
