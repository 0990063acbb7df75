"""maas model version controller: versions, canaries and progressive rollouts for KServe.

Modules: ``model`` (names, validation), ``kube`` (API access, errors, waits), ``traffic``
(Knative vs Standard canary patches; its docstring records how we read KServe's CRD),
``history`` (the history ConfigMap), ``commands`` (deploy/canary/promote/rollback/status/
history), ``prometheus`` (canary health), ``rollout`` (progressive delivery), ``reconcile``
(the ``run`` loop), ``output`` and ``cli``.
"""
