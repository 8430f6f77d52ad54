; broken_model.scm: a model folder that cannot be loaded gives an execution error and leaves the image
; as it was. test_plugin.sh defines `broken` (the folder) and checks GIMP's exit status (70).

(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (save img "broken-before.png")
  (report "broken-caught"
          (if (eq? 'caught (catch 'caught (plug-in-ddpm-denoise #:run-mode RUN-NONINTERACTIVE #:image img
                                                                #:drawables (vector (first-layer img))
                                                                #:model broken #:strength 0.5)))
              "yes" "no"))
  (report "missing-caught"
          (if (eq? 'caught (catch 'caught (plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE
                                                                 #:model "no-such-model-anywhere")))
              "yes" "no"))
  (report "unsupported-caught"
          (if (eq? 'caught (catch 'caught (plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE #:model unsupported)))
              "yes" "no"))
  (save img "broken-after.png")
  ; Not caught this time: the batch run ends with the execution error.
  (plug-in-ddpm-noise #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                      #:model broken #:timestep 10))
