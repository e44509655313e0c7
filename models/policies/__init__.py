"""The decisions: which offer to show and which outreach action to queue, under which rules.

Each policy is defined here once, on model scores, and called alike by off-policy
evaluation in training, by batch scoring and by the service:

- `offers`: the next-best-offer policy (allowed offers, ranked by expected value, showing
  nothing when no offer is worth more) and the baselines it is valued against.
- `outreach`: the outreach candidates of a day and the queue ranked under consent, quiet
  hours, frequency cap and capacity.
"""
