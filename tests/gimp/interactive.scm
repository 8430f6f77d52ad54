; interactive.scm: the three procedures run interactively in the GIMP GUI (under Xvfb). interactive.sh
; defines out, model (the one the dialogs start with, slow enough to cancel mid-run) and fast-model,
; writes the dialogs' starting values, and drives the windows with xdotool while this script waits in
; each call. Every step reports through the console ("RESULT key=value").

(gimp-message-set-handler CONSOLE)
;; Script-Fu gives back (#f) for a run that the user cancelled, the return values otherwise, and an error
;; (caught here) for a failed run.
(define (outcome thunk)
  (let ((r (catch 'caught (thunk))))
    (cond ((eq? r 'caught) "failed")
          ((and (pair? r) (eq? (car r) #f)) "cancelled")
          (else "finished"))))
(define (n-images) (num (vector-length (car (gimp-get-images)))))

(define img (make-test-image 96 64 RGB-IMAGE))
(gimp-image-set-file img (string-append out "/test-picture.xcf"))
(define disp (car (gimp-display-new img)))
(gimp-image-select-rectangle img CHANNEL-OP-REPLACE 24 16 32 32)
(save img "ia-before.png")
(report "images-at-start" (n-images))

; 1. Generate: the driver presses OK, lets the sampler run a little, and presses Cancel.
(report "generate-1" (outcome (lambda () (plug-in-ddpm-generate #:run-mode RUN-INTERACTIVE))))
(report "images-after-cancel" (n-images))

; 2. A generated result, on display.
(let* ((r (plug-in-ddpm-generate #:run-mode RUN-NONINTERACTIVE #:model model #:sampler result-sampler
                                 #:steps result-steps #:seed 4 #:variations 4))
       (gen (car r)))
  (gimp-image-set-file gen (string-append out "/generated-result.xcf"))
  (gimp-display-new gen)
  (gimp-displays-flush))

; 3. Denoise: OK, then Cancel mid-run: the picture must stay as it was.
(report "denoise-1" (outcome (lambda () (plug-in-ddpm-denoise #:run-mode RUN-INTERACTIVE #:image img
                                                              #:drawables (vector (first-layer img))))))
(save img "ia-after-cancel.png")

; 4. Noise: OK (it is quick).
(report "noise-1" (outcome (lambda () (plug-in-ddpm-noise #:run-mode RUN-INTERACTIVE #:image img
                                                          #:drawables (vector (first-layer img))))))
(save img "ia-noised.png")

; 5. Denoise to the end (the driver has switched its starting values to a fast run meanwhile).
(report "denoise-2" (outcome (lambda () (plug-in-ddpm-denoise #:run-mode RUN-INTERACTIVE #:image img
                                                              #:drawables (vector (first-layer img))))))
(save img "ia-denoised.png")

; 6. Filters > Repeat: the last values, no parameter dialog, the progress dialog.
(report "denoise-last-values" (outcome (lambda () (plug-in-ddpm-denoise #:run-mode RUN-WITH-LAST-VALS #:image img
                                                                        #:drawables (vector (first-layer img))))))
(save img "ia-repeated.png")
(report "done" "yes")
(gimp-quit TRUE)  ; TRUE: without asking about the unsaved images
