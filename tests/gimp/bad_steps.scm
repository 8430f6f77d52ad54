; bad_steps.scm: more steps than the model has timesteps is a calling error that names the argument.
(plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE #:model model #:steps 5000)
