; bad_width.scm: a width the model's UNet cannot take is a calling error that names the argument.
(plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE #:model model #:steps 2 #:width 33)
