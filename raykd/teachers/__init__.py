"""Teachers: what a teacher is (spec), the service that streams its outputs per epoch (Ray actors), the stored
tables of those outputs, the sources a trainer reads them from, the one precision they all reach a student in,
and the store of trained teachers."""
