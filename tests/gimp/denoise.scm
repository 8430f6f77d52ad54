; denoise.scm: plug-in-ddpm-denoise in batch mode.

(define (denoise img . args)
  (apply plug-in-ddpm-denoise
         (append (list #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                       #:model model #:steps 10 #:device "cpu" #:seed 11)
                 args)))

; Strength 0 leaves the pixels exactly as they were (selection (20, 12, 16, 16) of 64 x 48).
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (save img "den-clean.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (denoise img #:strength 0.0)
  (save img "den-s0.png"))

; Strength 0.6: only the selection changes; the same seed gives the same pixels.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (denoise img #:strength 0.6)
  (save img "den-s06.png"))
(let ((img (make-test-image 64 48 RGB-IMAGE)))           ; tuning asked for: nothing to tune on the CPU
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (denoise img #:strength 0.6 #:tune TRUE)
  (save img "den-s06-again.png"))

; A selection larger than the model (16 x 16): overlapping tiles.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 4 4 52 36)
  (denoise img #:strength 0.5)
  (save img "den-tiled.png"))

; A feathered ellipse: changes stay within its box grown by the feather radius.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-ellipse img CHANNEL-OP-REPLACE 16 12 24 20)
  (gimp-selection-feather img 6)
  (denoise img #:strength 0.7)
  (save img "den-feather.png"))

; RGBA: alpha kept.
(let ((img (make-test-image 64 48 RGBA-IMAGE)))
  (add-transparency img)
  (save img "den-rgba-clean.png")
  (denoise img #:strength 0.7)
  (save img "den-rgba.png"))

; Gray image, strength 0 and 0.6.
(let ((img (make-test-image 64 48 GRAY-IMAGE)))
  (save img "den-gray-clean.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (denoise img #:strength 0.0)
  (save img "den-gray-s0.png")
  (denoise img #:strength 0.6)
  (save img "den-gray-s06.png"))

; 16-bit image, strength 0: unchanged.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-convert-precision img PRECISION-U16-NON-LINEAR)
  (save img "den-u16-clean.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (denoise img #:strength 0.0)
  (save img "den-u16-s0.png"))

; Already noisy, sigma estimated; then a given sigma.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (plug-in-ddpm-noise #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                      #:model model #:timestep 30 #:seed 2)
  (save img "den-noisy-in.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (let ((r (denoise img #:mode "already-noisy" #:sigma 0.0)))
    (report "noisy-est-t" (num (cadr r)))
    (report "noisy-est-sigma" (num (caddr r))))
  (save img "den-noisy-est.png")
  (let ((r (denoise img #:mode "already-noisy" #:sigma 20.0)))
    (report "noisy-20-t" (num (cadr r)))
    (report "noisy-20-sigma" (num (caddr r)))))

; Diffusion x_t: Noise to step 30, then Denoise from 30.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 16 16)
  (plug-in-ddpm-noise #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                      #:model model #:timestep 30 #:seed 2)
  (save img "den-xt-in.png")
  (let ((r (denoise img #:mode "diffusion-xt" #:timestep 30)))
    (report "xt-t" (num (cadr r))))
  (save img "den-xt.png"))

; Already noisy with a flip ensemble of 8 (a 20 x 12 selection, not square): only the selection changes,
; and the result differs from the single run on the same pixels (the same noise seed makes them the same).
(define (noisy-for-ensemble)
  (let ((img (make-test-image 64 48 RGB-IMAGE)))
    (plug-in-ddpm-noise #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                        #:model model #:timestep 30 #:seed 2)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 12 20 12)
    img))
(let ((img (noisy-for-ensemble)))
  (save img "den-ens-in.png")
  (denoise img #:mode "already-noisy" #:sigma 20.0 #:ensemble 1)
  (save img "den-ens1.png"))
(let ((img (noisy-for-ensemble)))
  (denoise img #:mode "already-noisy" #:sigma 20.0 #:ensemble 8)
  (save img "den-ens8.png"))

; A 4-channel model on an RGBA layer: the layer's alpha is kept.
(let ((img (make-test-image 64 48 RGBA-IMAGE)))
  (add-transparency img)
  (save img "den-m4-clean.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 4 4 40 30)
  (denoise img #:model model4 #:strength 0.7)
  (save img "den-m4.png"))
