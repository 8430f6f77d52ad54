; prelude.scm: helpers for the headless GIMP tests. test_plugin.sh defines `out` (a folder for the PNGs)
; and `model` (the tiny test model's folder) before loading this file.

(define (num x) (number->string x))

; A line that test_plugin.sh picks out of GIMP's output: "RESULT key=value".
(define (report key value) (gimp-message (string-append "RESULT " key "=" value)))

(define (save img name) (gimp-file-save RUN-NONINTERACTIVE img (string-append out "/" name) #f))

; Saves what is visible as one layer (hidden layers dropped), leaving img as it is.
(define (save-flat img name)
  (let ((dup (car (gimp-image-duplicate img))))
    (gimp-image-flatten dup)
    (save dup name)
    (gimp-image-delete dup)))

(define (first-layer img) (vector-ref (car (gimp-image-get-layers img)) 0))

(define (fill-rect img layer x y w h grey)
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE x y w h)
  (gimp-context-set-foreground (list grey grey grey))
  (gimp-drawable-edit-fill layer FILL-FOREGROUND)
  (gimp-selection-none img))

; A w x h image of layer type `type` (RGB-IMAGE, RGBA-IMAGE, GRAY-IMAGE, ...): grey 64 on the left half,
; 192 on the right half, and a darker square (16) plus a lighter one (240) for some structure.
(define (make-test-image w h type)
  (let* ((gray (or (= type GRAY-IMAGE) (= type GRAYA-IMAGE)))
         (img (car (gimp-image-new w h (if gray GRAY RGB))))
         (layer (car (gimp-layer-new img "base" w h type 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img layer 0 0)
    (gimp-context-set-opacity 100)
    (fill-rect img layer 0 0 w h 64)
    (fill-rect img layer (/ w 2) 0 (/ w 2) h 192)
    img))

; Makes part of an RGBA test image transparent (a cleared strip) and half transparent (a 50% strip).
(define (add-transparency img)
  (let ((layer (first-layer img)))
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 0 0 8 (car (gimp-image-get-height img)))
    (gimp-drawable-edit-clear layer)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 0 8 (car (gimp-image-get-height img)))
    (gimp-drawable-edit-clear layer)
    (gimp-context-set-opacity 50)
    (gimp-context-set-foreground '(128 128 128))
    (gimp-drawable-edit-fill layer FILL-FOREGROUND)
    (gimp-context-set-opacity 100)
    (gimp-selection-none img)))
