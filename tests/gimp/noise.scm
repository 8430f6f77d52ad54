; noise.scm: plug-in-ddpm-noise in batch mode on RGB, RGBA, gray and float images.

(define (noise img t seed)
  (plug-in-ddpm-noise #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector (first-layer img))
                      #:model model #:timestep t #:seed seed))

; RGB, selection (8, 8, 40, 32) of 64 x 48.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (save img "noise-clean.png")
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 40 32)
  (report "noise-seed" (num (car (noise img 20 3))))
  (save img "noise-t20.png"))
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 40 32)
  (noise img 20 3)
  (save img "noise-t20-again.png"))
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 40 32)
  (noise img 20 4)
  (save img "noise-t20-seed4.png"))
; Whole drawable (no selection), a later timestep.
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (noise img 8 5)
  (save img "noise-t8-all.png"))

; Gray.
(let ((img (make-test-image 64 48 GRAY-IMAGE)))
  (save img "noise-gray-clean.png")
  (noise img 20 3)
  (save img "noise-gray-t20.png"))

; RGBA with transparent and half-transparent strips: alpha is kept.
(let ((img (make-test-image 64 48 RGBA-IMAGE)))
  (add-transparency img)
  (save img "noise-rgba-clean.png")
  (noise img 20 3)
  (save img "noise-rgba-t20.png"))

; 32-bit float image (saved as a 16-bit PNG).
(let ((img (make-test-image 64 48 RGB-IMAGE)))
  (gimp-image-convert-precision img PRECISION-FLOAT-NON-LINEAR)
  (save img "noise-float-clean.png")
  (noise img 20 3)
  (save img "noise-float-t20.png"))
