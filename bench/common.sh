# Helpers shared by bench/restore.sh and bench/image.sh (sourced, not run).
# ms CMD...: run CMD with stdout discarded and print its wall time in milliseconds.
ms() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL); print(round((time.perf_counter()-t)*1000,1))' "$@"; }
# median N...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
# ratio A B: A/B with two decimals.
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
