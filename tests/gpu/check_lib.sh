# check_lib.sh: what the emulator's shell checks share (sourced: tuning_check.sh, conv_pick_check.sh).
# check NAME CONDITION-EXIT-STATUS [LOG]: prints PASS or FAIL with the name (and on failure LOG's last 20 lines);
# a failure sets fail=1, the script's exit status.
fail=0
check () {
  if [ "$2" -eq 0 ]; then
    echo "PASS: $1"
  else
    echo "FAIL: $1"
    [ $# -gt 2 ] && tail -20 "$3"
    fail=1
  fi
}
