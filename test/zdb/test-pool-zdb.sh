KIND=zdb
source "$(dirname "$0")/test-pool.sh"
