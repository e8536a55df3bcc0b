"""Self-training on an unlabelled target region: rounds (:mod:`.rounds`) and pseudo labels (:mod:`.pseudo`)."""

#: Refinement strategies: the 1st place's progressive threshold labels, the 3rd place's teacher-student.
STRATEGIES = ("threshold", "uncertainty")
