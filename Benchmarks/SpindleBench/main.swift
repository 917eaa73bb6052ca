print("spindle-bench")
